"""Methods are data: registered reward terms with what they need, weighted and logged by one generic sum."""

import dataclasses
from types import SimpleNamespace

import pytest

from profilekit.methods import METHODS, REWARD_TERMS, Method, RewardInputs, Term, reward_term

pytestmark = pytest.mark.fast  # `make test-fast`: no Dagster run, subprocess, browser or real model


def test_each_method_needs_what_its_terms_need():
    needs = {name: set(m.needs) for name, m in METHODS.items()}
    assert needs["blue"] == {"embedder", "policy"}
    assert needs["blue-no-text"] == needs["langptune"] == {"embedder"}
    assert needs["blue-no-emb"] == {"policy"}
    assert needs["rlpf"] == needs["rlaif"] == {"judge"}
    assert METHODS["rlaif"].drop_constant_groups and METHODS["blue-reinforcepp"].advantage == "batch"


def test_ablations_change_the_fingerprint_and_a_copy_does_not():
    prints = {name: m.fingerprint() for name, m in METHODS.items()}
    assert len(set(prints.values())) == len(prints)
    twin = Method("blue", tuple(Term(t.name, t.weight, dict(t.options)) for t in METHODS["blue"].terms))
    assert twin.fingerprint() == prints["blue"]


def test_a_revised_objective_gets_a_new_fingerprint_and_only_the_direction_ablations_are_revised():
    blue = METHODS["blue"]
    assert dataclasses.replace(blue, revision=1).fingerprint() != blue.fingerprint()
    assert {name for name, m in METHODS.items() if m.revision} == {"blue-u2i", "blue-i2u"}


class _Answers:
    """A stand-in LLM answering every multiple-choice question with option A (index 0)."""

    def generate(self, messages, sampling):
        return SimpleNamespace(texts=["A"] * len(messages))


def _inputs(policy=None, judge=None) -> RewardInputs:
    data = SimpleNamespace(options=[["Heat", "Babe", "Up", "Jaws"]] * 2, answers=[0, 1], recent=["[Heat | 4]"] * 2)
    return RewardInputs(["p1", "p2", "p3", "p4"], batch=[0, 1], rollouts=2, data=data, policy=policy, judge=judge)


def test_the_weighted_sum_of_terms_and_every_term_logged():
    calls = []

    if "test_constant" not in REWARD_TERMS:
        @reward_term("test_constant")
        def _constant(inputs, value: float = 1.0):
            calls.append(value)
            return inputs.grid([value] * len(inputs.profiles)), {"half": inputs.grid([value / 2] * len(inputs.profiles))}

    method = Method("mix", (Term("self_multiple_choice", weight=2.0), Term("test_constant", 0.5, {"value": 3.0})))
    total, logged = method.rewards(_inputs(policy=_Answers()))
    # self MC: example 0's answer is A (right), example 1's is B (A is wrong): rows [[1, 1], [0, 0]]
    assert total.tolist() == [[2 + 1.5, 2 + 1.5], [0 + 1.5, 0 + 1.5]]
    assert logged == {"self_multiple_choice": 0.5, "test_constant": 3.0, "test_constant/half": 1.5}
    assert calls == [3.0]


def test_a_judge_term_uses_the_judge_not_the_policy():
    total, logged = METHODS["rlpf"].rewards(_inputs(policy=None, judge=_Answers()))
    assert total.tolist() == [[1.0, 1.0], [0.0, 0.0]] and logged == {"judge_multiple_choice": 0.5}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_has_known_terms(name):
    assert all(t.name in REWARD_TERMS for t in METHODS[name].terms)


def test_a_method_asks_with_a_registered_prompt_and_the_prompt_shapes_the_chat():
    import json

    import pandas as pd

    from profilekit.profiler import profile_conversations
    from profilekit.prompts import PROFILE_PROMPTS, ProfilePrompt

    with pytest.raises(ValueError, match="unknown prompt 'nope'"):
        Method("x", (Term("ndcg"),), prompt="nope")
    assert {m.prompt for m in METHODS.values()} == {"profile", "duet", "duet-free"} and "profile" in PROFILE_PROMPTS
    examples = pd.DataFrame([{"domain": "d", "user_id": "u", "cut": 0, "history_items": json.dumps(["a"]),
                              "history_ratings": json.dumps([4.0])}])
    items = pd.DataFrame({"item_id": ["a"], "title": ["Heat"]})
    shouting = ProfilePrompt(lambda lines: [{"role": "user", "content": " ".join(lines).upper()}], str.strip)
    chats = profile_conversations(examples, items, lambda xs: [1] * len(xs), 100, shouting)
    assert chats == [[{"role": "user", "content": "[HEAT | 4]"}]]
