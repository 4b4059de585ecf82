"""DUET and BUMP (DUET_BUMP.md): parsers, rewards on the spec's worked values, the pessimistic ranking repair, the
false-negative exclusion, rating metrics, and that no target information reaches a target-agnostic profile."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from profilekit.bump import (
    BumpConfig,
    ListwiseJudge,
    bump_rewards,
    chance_ndcg,
    length_penalty,
    multi_positive_ndcg,
    negative_pools,
    positive_rank,
    single_positive_ndcg,
)
from profilekit.duet import RatingScale, duet_reward, item_evidence, rating_scale
from profilekit.llm.sampler import SamplingConfig
from profilekit.methods import METHODS, REWARD_TERMS, RewardInputs
from profilekit.metrics import rating_metrics, round_to_scale
from profilekit.profiler import GeneratedTexts, generate_profiles, profile_conversations
from profilekit.prompts import (
    PROFILE_PROMPTS,
    ItemEvidence,
    duet_rating_example,
    duet_user_profile,
    duet_valid,
    parse_duet,
    parse_duet_rating,
    parse_ranking,
    parse_rating,
)

pytestmark = pytest.mark.fast

GREEDY_ANSWER = SamplingConfig(max_new_tokens=8, temperature=0.0, top_p=1.0, seed=0, prompt_bucket=16)

FULL = (
    "<user_profile><cue>likes noir</cue><constructed_prompt>Describe taste in crime films.</constructed_prompt>"
    "<profile>A fan of dark crime dramas.</profile></user_profile>\n"
    "<item_profile><cue>cult classic</cue><constructed_prompt>Say who enjoys it.</constructed_prompt>"
    "<profile>Appeals to thriller fans.</profile></item_profile>"
)


# --- DUET parser ---------------------------------------------------------------------------------------------

def test_parse_duet_reads_both_blocks_and_is_strictly_valid():
    parsed = parse_duet(FULL)
    assert parsed["user"] == {"cue": "likes noir", "constructed_prompt": "Describe taste in crime films.",
                              "profile": "A fan of dark crime dramas."}
    assert parsed["item"]["profile"] == "Appeals to thriller fans." and parsed["item"]["cue"] == "cult classic"
    assert duet_valid(parsed, "strict") and duet_valid(parsed, "lenient")


def test_parse_duet_is_case_insensitive_and_ignores_text_outside_the_tags():
    text = "Sure! Here you go.\n" + FULL.upper().replace("A FAN", "a fan") + "\nHope this helps."
    parsed = parse_duet(text)
    assert parsed["user"]["profile"] == "a fan OF DARK CRIME DRAMAS." and duet_valid(parsed)


def test_scopes_keep_fields_apart_and_an_unclosed_tag_is_missing():
    # The user block's <profile> is unclosed: its text must not run into the item block's fields.
    text = ("<user_profile><cue>c</cue><constructed_prompt>p</constructed_prompt><profile>cut off"
            "</user_profile><item_profile><cue>ic</cue><constructed_prompt>ip</constructed_prompt>"
            "<profile>item</profile></item_profile>")
    parsed = parse_duet(text)
    assert parsed["user"]["profile"] is None and parsed["item"]["profile"] == "item"
    assert not duet_valid(parsed, "strict") and not duet_valid(parsed, "lenient")


def test_lenient_needs_only_the_two_profiles_and_one_block_fails_both():
    text = "<user_profile><profile>u</profile></user_profile><item_profile><profile>i</profile></item_profile>"
    assert duet_valid(parse_duet(text), "lenient") and not duet_valid(parse_duet(text), "strict")
    only_user = FULL.split("\n")[0]
    parsed = parse_duet(only_user)
    assert parsed["item"] == {"cue": None, "constructed_prompt": None, "profile": None}
    assert not duet_valid(parsed, "lenient")
    # An unclosed user scope ends where the item scope opens.
    unclosed_scope = FULL.replace("</user_profile>", "")
    assert parse_duet(unclosed_scope)["user"]["profile"] == "A fan of dark crime dramas."
    with pytest.raises(ValueError):
        duet_valid(parsed, "loose")


def test_the_profile_every_other_use_reads_is_the_user_profile():
    assert duet_user_profile(FULL) == "A fan of dark crime dramas."
    assert duet_user_profile("<cue>x</cue> likes  noir") == "x likes noir"  # broken format: text without tags
    assert PROFILE_PROMPTS["duet"].parse(FULL) == "A fan of dark crime dramas."


def test_rating_parsers_read_the_scale_and_the_two_decimal_mode():
    assert parse_duet_rating("<rating>4.37</rating>") == 4.37
    assert parse_duet_rating("I think <Rating> 4 </rating>") == 4.0
    assert parse_duet_rating("<rating>4</rating>", two_decimals=True) is None
    assert parse_duet_rating("<rating>6.00</rating>") is None  # outside 1-5
    assert parse_rating("0.5 stars", 0.5, 5.0) == 0.5 and parse_rating("0.5 stars") is None
    assert parse_rating("10 / 10, so 4") == 4.0


# --- DUET reward, rating scale, metrics ----------------------------------------------------------------------

def test_duet_reward_on_the_papers_cases_with_clipping_and_the_penalty():
    scale = RatingScale(1.0, 5.0)
    reward = duet_reward(np.array([4.8, 3.0, 7.0, np.nan]), np.array([True, True, True, False]), 5.0, scale)
    assert reward == pytest.approx([0.95, 0.50, 1.0, -1.0])
    half = RatingScale(0.5, 5.0, 0.5)
    assert duet_reward(np.array([0.0]), np.array([True]), 5.0, half, penalty=-2.0) == pytest.approx([0.0])
    assert duet_reward(np.array([1.0]), np.array([False]), 5.0, half, penalty=-2.0) == pytest.approx([-2.0])


def test_rating_scale_is_the_observed_one():
    assert rating_scale([1, 5, 3]) == RatingScale(1.0, 5.0, 1.0) and rating_scale([1, 5]).gap == 4.0
    assert rating_scale([0.5, 4.5, 3]) == RatingScale(0.5, 4.5, 0.5)


def test_rating_metrics_on_hand_computed_values():
    # Predictions clip to [1, 5] and round half up: 4.5 -> 5, 2.4 -> 2, 6.0 -> 5 (clipped), 1.0 -> 1.
    assert round_to_scale(np.array([4.5, 2.4, 6.0, 1.0, 2.25]), 1.0, 5.0).tolist() == [5, 2, 5, 1, 2]
    assert round_to_scale(np.array([2.25, 0.7]), 0.5, 5.0, 0.5).tolist() == [2.5, 0.5]
    out = rating_metrics(np.array([4.5, 2.4, 6.0, 1.0]), np.array([5, 3, 5, 2]), 1.0, 5.0)
    errors = np.array([0.5, 0.6, 0.0, 1.0])
    assert out["mae"] == pytest.approx(errors.mean()) and out["rmse"] == pytest.approx(np.sqrt((errors**2).mean()))
    assert out["accuracy"] == pytest.approx(0.5)  # rounded [5, 2, 5, 1] vs [5, 3, 5, 2]
    # Classes present in y: 2, 3, 5. F1(5) = 1 (2 of 2); F1(3) = 0; F1(2) = 0 (its one case predicted 1).
    assert out["macro_f1"] == pytest.approx(1 / 3)


# --- DUET reward term with a scripted judge ------------------------------------------------------------------

class Recorder:
    """A stand-in LLM: records the conversations and answers them from a function of the prompt text."""

    def __init__(self, answer):
        self.answer, self.seen = answer, []

    def generate(self, conversations, sampling, *args):
        self.seen.extend(conversations)
        return SimpleNamespace(texts=[self.answer(c[-1]["content"]) for c in conversations])

    def sampling_for(self, prompt, config):
        return config


def test_duet_term_asks_the_judge_only_for_parsed_completions():
    data = SimpleNamespace(target_ratings=[5.0, 2.0], item_texts=["Heat (1995)", "Babe (1995)"], recent=["", ""],
                           rating_scale=(1.0, 5.0, 1.0))
    judge = Recorder(lambda text: "<rating>4.80</rating>" if "Heat" in text else "no idea")
    completions = [FULL, "garbage", FULL, FULL]
    inputs = RewardInputs(["p"] * 4, [0, 1], 2, data, judge=judge, answer_sampling=GREEDY_ANSWER,
                          completions=completions)
    rewards, logged = METHODS["duet"].rewards(inputs)
    assert np.allclose(rewards, [[0.95, -1.0], [-1.0, -1.0]])  # Babe's rating is unreadable
    assert len(judge.seen) == 3 and all("A fan of dark crime dramas." in c[0]["content"] for c in judge.seen)
    assert logged["duet_rating/compliance"] == 0.75 and logged["duet_rating/format_fail"] == 0.25
    assert logged["duet_rating/judge_unparsed"] == 0.5 and logged["duet_rating/abs_err"] == pytest.approx(0.2)
    assert logged["duet_rating/rating_mean"] == pytest.approx(4.8) and logged["duet_rating/example_copied"] == 0.0


def test_duet_term_logs_how_often_the_judge_copies_its_instructions_example():
    data = SimpleNamespace(target_ratings=[4.0], item_texts=["Heat (1995)"], recent=[""], rating_scale=(1.0, 5.0, 1.0))
    answers = iter(["Rating: 4.36", "1.40 out of 5", "<rating>4.36</rating>", "4.3"])
    inputs = RewardInputs(["p"] * 4, [0], 4, data, judge=Recorder(lambda text: next(answers)),
                          answer_sampling=GREEDY_ANSWER, completions=[FULL] * 4)
    rewards, logged = METHODS["duet"].rewards(inputs)
    assert duet_rating_example(1.0, 5.0) == 4.36 and "<rating>4.36</rating>" in inputs.judge.seen[0][0]["content"]
    assert logged["duet_rating/example_copied"] == 0.5
    assert logged["duet_rating/rating_mean"] == pytest.approx((4.36 + 1.4 + 4.36 + 4.3) / 4)


# --- DUET item evidence and the leak test --------------------------------------------------------------------

def _domain():
    t = pd.Timestamp("2020-01-01", tz="UTC")
    rows = [  # (user, item, rating, day)
        ("u1", "a", 4.0, 0), ("u1", "b", 3.0, 1), ("u1", "T", 5.0, 5),  # u1's target T at day 5
        ("u2", "T", 2.0, 2), ("u3", "T", 4.0, 3), ("u1", "T", 1.0, 4),  # u1's own earlier rating of T: excluded
        ("u4", "T", 1.0, 5), ("u5", "T", 3.0, 9),  # at and after the target's time: excluded
    ]
    interactions = pd.DataFrame([{"domain": "d", "user_id": u, "item_id": i, "rating": r,
                                  "timestamp": t + pd.Timedelta(days=day), "seq": k} for k, (u, i, r, day) in enumerate(rows)])
    items = pd.DataFrame({"item_id": ["a", "b", "T"], "title": ["Alien", "Babe", "Zyzzyx Road"],
                          "text": ["Alien | Horror", "Babe | Family", "Zyzzyx Road | Thriller"]})
    example = pd.DataFrame([{"domain": "d", "user_id": "u1", "cut": 0, "target_item_id": "T", "target_rating": 5.0,
                             "target_timestamp": t + pd.Timedelta(days=5), "history_items": json.dumps(["a", "b"]),
                             "history_ratings": json.dumps([4.0, 3.0])}])
    return interactions, items, example


def test_item_evidence_holds_only_other_users_ratings_before_the_target():
    interactions, items, example = _domain()
    [evidence] = item_evidence(example, interactions, items)
    assert evidence == ItemEvidence("Zyzzyx Road | Thriller", ("[User 1 | 2]", "[User 2 | 4]"), 3.0)
    assert item_evidence(example, interactions, items, k=1)[0].lines == ("[User 1 | 4]",)


def test_no_target_information_reaches_a_target_agnostic_duet_profile():
    interactions, items, example = _domain()
    prompt = PROFILE_PROMPTS["duet"]
    count = lambda texts: [len(t.split()) for t in texts]  # noqa: E731
    evidence = item_evidence(example, interactions, items)
    trained_on = json.dumps(profile_conversations(example, items, count, 100, prompt, evidence))
    assert "Zyzzyx" in trained_on and "[User 1 | 2]" in trained_on  # the training prompt does show the target

    class Profiler(Recorder):
        def count_tokens(self, texts):
            return count(texts)

        def generate(self, conversations, config, cache=None, progress=None):
            self.seen.extend(conversations)
            return GeneratedTexts([FULL] * len(conversations), [1] * len(conversations), [1] * len(conversations),
                                  [0.0] * len(conversations))

    chat = Profiler(None)
    frame, _ = generate_profiles(chat, example, items, 100, None, prompt=prompt)
    shown = json.dumps(chat.seen)
    # Neither the target's id, title or text, nor its other ratings, nor its rating and time can reach the prompt.
    for leak in ("Zyzzyx", "Thriller", "[User ", '"T"', "5.0", "2020-01-06"):
        assert leak not in shown, leak
    assert "[Alien | 4]" in shown and frame["profile"].tolist() == ["A fan of dark crime dramas."]


# --- BUMP -----------------------------------------------------------------------------------------------------

def test_ndcg_worked_values():
    assert single_positive_ndcg(2) == pytest.approx(0.6309, abs=1e-4)
    assert multi_positive_ndcg(np.array([1, 3])) == pytest.approx(0.9197, abs=1e-4)
    assert multi_positive_ndcg(np.array([[1, 2], [2, 1]])) == pytest.approx([1.0, 1.0])
    assert chance_ndcg(8) == pytest.approx(0.4727, abs=1e-4) and chance_ndcg(3) == pytest.approx(0.6404, abs=1e-4)


def test_parse_ranking_and_the_pessimistic_repair():
    assert parse_ranking("3 > 1 > 3 > 9 > 2", 4) == [2, 0, 1]  # duplicate 3 and invalid 9 dropped
    assert positive_rank([2, 0, 1], 4, 0) == 2
    assert positive_rank([2, 0, 1], 4, 3) == 4  # unranked: after the unranked negatives, i.e. last
    assert positive_rank(parse_ranking("I cannot tell", 5), 5, 0) == 5


def test_length_penalty_is_zero_up_to_the_threshold():
    assert length_penalty(np.array([10, 64, 96, 128]), 64).tolist() == [0.0, 0.0, 0.5, 1.0]
    assert length_penalty(np.array([128]), 64, weight=0.0).tolist() == [0.0]


def test_negative_pools_exclude_false_negatives_and_cap_k():
    rng = np.random.default_rng(0)
    pools = negative_pools(["x", "y", "x", "z", "w"], 8, rng)
    assert pools[0] == [1, 3, 4] and pools[2] == [1, 3, 4]  # users 0 and 2 share their held-out item
    assert pools[1] == [0, 2, 3, 4]
    assert all(len(p) == 2 for p in negative_pools(["a", "b", "c", "d", "e"], 2, rng))


def _bump_batch(answer, config=BumpConfig(k=2, m_perm=2, length_threshold=4), lengths=None):
    profiles = np.array([[f"profile u{u} g{g}" for g in range(2)] for u in range(3)], dtype=object)
    heldout = [f"[Film {u} | 4]" for u in range(3)]
    chat = Recorder(answer)
    lengths = np.full((3, 2), 3) if lengths is None else lengths
    reward, parts = bump_rewards(profiles, heldout, ["a", "b", "c"], [7, 8, 9], lengths,
                                 ListwiseJudge(chat, None), config, seed=1, step=3)
    return reward, parts, chat


def _shown_position(prompt: str, positive: str) -> int:
    labels = dict((text.strip(), int(k)) for k, text in re.findall(r"\[(\d+)\] (.*)", prompt))
    return labels[positive]


def test_bump_averages_ndcg_over_the_shuffled_presentations():
    """A judge that keeps the presented order: the positive's rank is where the shuffle put it, so the reward is
    the mean over the M_perm presentations of 1/log2(position + 1), forward plus backward."""
    reward, parts, chat = _bump_batch(lambda text: "1 > 2 > 3")
    assert len(chat.seen) == 3 * 2 * 2 * 2  # B · G · M_perm · 2 directions
    forward = [c[0]["content"] for c in chat.seen if c[0]["content"].startswith("User:")]
    backward = [c[0]["content"] for c in chat.seen if c[0]["content"].startswith("Interaction:")]
    for u in range(3):
        for g in range(2):
            fwd = [p for p in forward if p.startswith(f"User: profile u{u} g{g}\n")]
            bwd = [p for p in backward if p.startswith(f"Interaction: [Film {u} | 4]\n") and f"profile u{u} g{g}" in p]
            assert len(fwd) == len(bwd) == 2
            # backward negatives are the other users' rollouts with the same index g
            assert all(re.findall(r"profile u\d g(\d)", p) == [str(g)] * 3 for p in bwd)
            expected_fwd = np.mean([single_positive_ndcg(_shown_position(p, f"[Film {u} | 4]")) for p in fwd])
            expected_bwd = np.mean([single_positive_ndcg(_shown_position(p, f"profile u{u} g{g}")) for p in bwd])
            assert parts["fwd"][u, g] == pytest.approx(expected_fwd)
            assert parts["bwd"][u, g] == pytest.approx(expected_bwd)
            assert reward[u, g] == pytest.approx(expected_fwd + expected_bwd)
    assert len({_shown_position(p, f"[Film {p.split()[2][1]} | 4]") for p in forward}) > 1  # shuffles moved it
    assert parts["K"].tolist() == [[2, 2]] * 3 and parts["chance"][0, 0] == pytest.approx(chance_ndcg(2))
    again, _, _ = _bump_batch(lambda text: "1 > 2 > 3")
    assert np.array_equal(again, reward)  # seeded


def test_bump_unparseable_answers_rank_the_positive_last_and_are_counted():
    reward, parts, _ = _bump_batch(lambda text: "no idea", lengths=np.array([[3, 6]] * 3))
    last = single_positive_ndcg(3)
    assert parts["judge_unparsed"][0, 0] == 1.0
    assert np.allclose(reward, [[2 * last, 2 * last - 0.5]] * 3)  # 6 tokens: (6 - 4) / 4 penalty
    assert parts["penalised_frac"].mean() == pytest.approx(0.5)


def test_bump_ablations_switch_directions_and_combine():
    judge = lambda text: "1 > 2 > 3"  # noqa: E731
    both, parts, _ = _bump_batch(judge)
    forward, fparts, chat = _bump_batch(judge, BumpConfig(k=2, m_perm=2, w_bwd=0.0, length_threshold=4))
    assert "bwd" not in fparts and np.allclose(forward, parts["fwd"]) and len(chat.seen) == 12
    backward, _, _ = _bump_batch(judge, BumpConfig(k=2, m_perm=2, w_fwd=0.0, length_threshold=4))
    assert np.allclose(backward, parts["bwd"])
    mean, _, _ = _bump_batch(judge, BumpConfig(k=2, m_perm=2, combine="mean", length_threshold=4))
    assert np.allclose(mean, both / 2)
    with pytest.raises(ValueError):
        BumpConfig(w_fwd=0.0, w_bwd=0.0)


def test_duet_and_bump_and_their_ablations_are_method_partitions():
    assert {"duet", "duet-zero-shot", "bump", "bump-forward", "bump-backward", "bump-no-length-penalty",
            "bump-holdout3"} <= set(METHODS)
    assert METHODS["duet"].prompt == "duet" and METHODS["bump"].prompt == "profile"
    # The scaffolded and the specified DUET differ only in who writes the tags, and are two objectives.
    assert METHODS["duet-free"].terms == METHODS["duet"].terms and METHODS["duet-free"].prompt == "duet-free"
    assert METHODS["duet-free"].fingerprint() != METHODS["duet"].fingerprint()
    assert PROFILE_PROMPTS["duet"].scaffold is not None and PROFILE_PROMPTS["duet-free"].scaffold is None
    assert METHODS["duet-zero-shot"].zero_shot and not METHODS["duet"].zero_shot
    assert METHODS["duet"].needs == METHODS["bump"].needs == {"judge"}
    assert METHODS["bump-embedder"].needs == {"embedder"}
    options = {name: METHODS[name].terms[0].options for name in METHODS if name.startswith("bump")}
    assert options["bump-forward"]["w_bwd"] == 0.0 and options["bump-backward"]["w_fwd"] == 0.0
    assert options["bump-no-length-penalty"]["length_weight"] == 0.0 and options["bump"]["m_perm"] == 2


def test_pointwise_and_embedder_judges_rank_by_score_with_ties_against_the_positive():
    from profilekit.bump import EmbedderJudge, PointwiseJudge

    class LogOdds:
        def __init__(self):
            self.seen = []

        def yes_no_logodds(self, conversations):
            self.seen.extend(conversations)
            return np.array([float(re.search(r"score(\d)", c[0]["content"]).group(1)) for c in conversations])

    chat = LogOdds()
    ranks, unparsed = PointwiseJudge(chat)("forward", ["q1", "q2"], [["score5", "score7", "score1"], ["score3", "score3"]],
                                           [0, 1])
    assert ranks.tolist() == [2, 2] and not unparsed.any()  # q2: the positive ties a negative and loses the tie
    assert len(chat.seen) == 5 and "User: q1\nInteraction: score5" in chat.seen[0][0]["content"]
    backward = PointwiseJudge(LogOdds())
    backward("backward", ["score0"], [["score2"]], [0])
    assert "User: score2\nInteraction: score0" in backward.chat.seen[0][0]["content"]

    class Vectors:
        def encode(self, texts):
            table = {"q": [1.0, 0.0], "same": [1.0, 0.0], "near": [0.8, 0.6], "far": [0.0, 1.0]}
            return np.array([table[t] for t in texts])

    ranks, _ = EmbedderJudge(Vectors())("forward", ["q", "q"], [["near", "same", "far"], ["same", "same"]], [0, 0])
    assert ranks.tolist() == [2, 2]


def test_qa_rating_answers_on_a_half_star_scale_and_the_rating_table_paired_against_base():
    from profilekit.qa import answer_questions, rating_metrics_table

    contexts = pd.DataFrame([{"domain": "d", "user_id": u, "cut": 0, "method": m, "context": "P", "text": f"{m} {u}"}
                             for m in ("Base", "duet") for u in ("a", "b", "c")])
    questions = pd.DataFrame([{"domain": "d", "user_id": u, "cut": 0, "options": ["w", "x", "y", "z"], "answer_index": 0,
                               "target_text": "Heat", "target_rating": r} for u, r in zip("abc", (0.5, 4.0, 3.0))])
    said = {"Base a": "0.5", "Base b": "3", "Base c": "no idea", "duet a": "1.0", "duet b": "4.5", "duet c": "3"}

    class Judge:
        def generate(self, conversations, config, cache=None, progress=None):
            return GeneratedTexts([said[re.search(r"User: (\w+ \w)", c[0]["content"]).group(1)] for c in conversations],
                                  [1] * len(conversations), [1] * len(conversations), [0.0] * len(conversations))

    scores = answer_questions(Judge(), contexts, questions, GREEDY_ANSWER, 2.5, rating_range=(0.5, 5.0))
    assert scores["rating_predicted"].tolist() == [0.5, 3.0, 2.5, 1.0, 4.5, 3.0]  # "no idea" -> the fallback 2.5
    assert scores["target_rating"].tolist() == [0.5, 4.0, 3.0] * 2
    table = rating_metrics_table(scores, RatingScale(0.5, 5.0, 0.5))
    assert set(table["vs_method"]) == {"Base", "blue"} and len(table) == 4
    duet = table[(table["method"] == "duet") & (table["vs_method"] == "Base")].iloc[0]
    assert duet["rating_mae"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert duet["rating_accuracy"] == pytest.approx(1 / 3) and duet["rating_unparsed"] == 0
    assert duet["n_paired"] == 3 and duet["mean_diff_vs_ref"] == pytest.approx((0.5 + 0.5 + 0.0) / 3 - (0 + 1 + 0.5) / 3)
    base = table[(table["method"] == "Base") & (table["vs_method"] == "Base")].iloc[0]
    assert base["rating_unparsed"] == 1 and np.isnan(base["t_pvalue_vs_ref"])
    assert base["rating_mae"] == pytest.approx((0 + 1 + 0.5) / 3)  # "no idea" scored at the fallback 2.5
    assert base["rating_mae_parsed"] == pytest.approx((0 + 1) / 2)  # only the two ratings the judge gave
    assert table[table["vs_method"] == "blue"]["n_paired"].eq(0).all()  # BLUE absent: nothing to pair with


# --- DUET blank_item_prob (A5 #5) ----------------------------------------------------------------------------

def test_blank_item_prob_blanks_that_share_of_prompts_reproducibly():
    from profilekit.duet import blank_item_mask
    from profilekit.methods import Method, Term
    from profilekit.training import TrainingExamples, step_conversations

    n = 2000
    data = TrainingExamples(messages=[[{"role": "user", "content": f"target {i}"}] for i in range(n)],
                            recent=[""] * n, target_ids=["t"] * n, negative_ids=[[]] * n, options=[[]] * n,
                            answers=[0] * n, blank_messages=[[{"role": "user", "content": f"blank {i}"}] for i in range(n)])
    batch = list(range(n))
    none, blanked = step_conversations(data, batch, 3, 0.0, seed=0)
    assert none == data.messages and not blanked.any()  # 0.0 changes nothing
    every, blanked = step_conversations(data, batch, 3, 1.0, seed=0)
    assert every == data.blank_messages and blanked.all()
    some, blanked = step_conversations(data, batch, 3, 0.25, seed=0)
    assert abs(blanked.mean() - 0.25) < 0.03
    assert [m[0]["content"].split()[0] for m in some] == ["blank" if b else "target" for b in blanked]
    assert np.array_equal(blank_item_mask(batch, 3, 0.25, 0), blanked)  # reproducible
    assert not np.array_equal(blank_item_mask(batch, 4, 0.25, 0), blanked)  # a new draw each step
    # The option is a Method field in the fingerprint, only on an item-aware prompt, and off by default.
    assert METHODS["duet"].blank_item_prob == 0.0
    blanking = Method("duet", METHODS["duet"].terms, prompt="duet", min_new_tokens=192, blank_item_prob=0.25)
    assert blanking.fingerprint() != METHODS["duet"].fingerprint()
    with pytest.raises(ValueError, match="item-aware"):
        Method("x", (Term("ndcg"),), blank_item_prob=0.5)
    with pytest.raises(ValueError, match="within"):
        Method("x", METHODS["duet"].terms, prompt="duet", blank_item_prob=1.5)


# --- BUMP holdout_events (B5 #1) -----------------------------------------------------------------------------

def test_holdout_events_moves_the_last_history_events_into_the_heldout_set():
    from profilekit.bump import holdout_split

    ids, ratings = ["a", "b", "c", "d"], [4.0, 3.0, 5.0, 2.0]
    assert holdout_split(ids, ratings, "T", 1.0) == (ids, ratings, ["T"], [1.0])  # P = 1: the target alone
    assert holdout_split(ids, ratings, "T", 1.0, 3) == (["a", "b"], [4.0, 3.0], ["c", "d", "T"], [5.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="no visible history"):
        holdout_split(ids, ratings, "T", 1.0, 5)
    with pytest.raises(ValueError, match=">= 1"):
        holdout_split(ids, ratings, "T", 1.0, 0)
    # A user holding out any of the same items is a false negative, whatever P.
    assert negative_pools([["c", "T"], ["x", "y"], ["y", "T"], ["z"]], 8, np.random.default_rng(0))[0] == [1, 3]


def test_bump_holdout3_is_a_partition_whose_profiler_sees_a_shorter_history():
    from profilekit.training import training_examples

    interactions, items, example = _domain()
    histories = example.assign(split="train", history_items=json.dumps(["a", "b", "a", "b"]),
                               history_ratings=json.dumps([4.0, 3.0, 2.0, 1.0]))
    candidates = pd.DataFrame([{"user_id": "u1", "cut": 0, "split": "train", "position": p, "item_id": i}
                               for p, i in enumerate(["T", "a", "b", "a"])])
    count = lambda texts: [len(t.split()) for t in texts]  # noqa: E731
    data = training_examples(histories, candidates, items, count, 100, 10, 0, holdout_events=3)
    assert data.heldout == ["[Alien | 2], [Babe | 1], [Zyzzyx Road | 5]"] and data.heldout_ids == [["a", "b", "T"]]
    assert data.heldout_events == [["[Alien | 2]", "[Babe | 1]", "[Zyzzyx Road | 5]"]]
    assert data.visible_ids == [["a", "b"]]
    prompt = data.messages[0][0]["content"]
    assert "[Alien | 4], [Babe | 3]" in prompt and "| 2]" not in prompt and "| 1]" not in prompt
    assert data.recent == ["[Alien | 4], [Babe | 3], [Alien | 2], [Babe | 1]"]  # the 10-H text is every method's
    one = training_examples(histories, candidates, items, count, 100, 10, 0)
    assert one.heldout == ["[Zyzzyx Road | 5]"] and "[Babe | 1]" in one.messages[0][0]["content"]
    assert METHODS["bump-holdout3"].holdout_events == 3 and METHODS["bump"].holdout_events == 1
    assert METHODS["bump-holdout3"].terms == METHODS["bump"].terms  # the same reward on the moved data


# --- BUMP+ (B5 #9) -------------------------------------------------------------------------------------------

def test_bump_plus_picks_the_least_typical_heldout_event_and_the_nearest_users():
    from profilekit.bump import centroid, hard_negative_pools, hard_positive

    assert np.allclose(centroid(np.array([[2.0, 0.0], [0.0, 2.0]])), [2 ** -0.5, 2 ** -0.5])
    # The candidate least similar to the visible centroid; ties keep the latest (the target).
    assert hard_positive(np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), np.array([1.0, 0.0])) == 1
    assert hard_positive(np.array([[0.0, 3.0], [0.0, 1.0]]), np.array([1.0, 0.0])) == 1
    centroids = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7], [1.0, 0.0]])
    # User 4 holds out the same item as user 0 (a false negative), so user 0's nearest users are 1 and 3.
    pools = hard_negative_pools(centroids, ["x", "y", "z", "w", "x"], 2)
    assert pools[0] == [1, 3] and pools[2] == [1, 3]
    assert pools[3] == [0, 1]  # 1 is nearest; 0, 2 and 4 tie at cos 45° and the earliest wins


def test_bump_plus_term_asks_with_the_hard_positive_and_the_hard_negatives():
    vec = {"v0": [1, 0], "v1": [0.9, 0.1], "v2": [0, 1], "v3": [0.1, 0.9],
           "a0": [1, 0], "b0": [0, 1], "T0": [0.9, 0.1],  # u0: b0 is the least typical
           "a1": [0.9, 0.1], "b1": [0.9, 0.1], "T1": [0.9, 0.1],  # u1: all alike, the target stays
           "a2": [1, 0], "b2": [0, 1], "T2": [0.1, 0.9],  # u2: a2
           "a3": [0, 1], "b3": [1, 0], "T3": [0.1, 0.9]}  # u3: b3
    held = [[f"a{u}", f"b{u}", f"T{u}"] for u in range(4)]
    data = SimpleNamespace(heldout_ids=held, heldout_events=[[f"[{x} | 4]" for x in h] for h in held],
                           visible_ids=[[f"v{u}"] for u in range(4)])
    judge = Recorder(lambda text: "1 > 2")
    inputs = RewardInputs([f"profile u{u}" for u in range(4)], [0, 1, 2, 3], 1, data,
                          item_vectors={k: np.array(v, dtype=float) for k, v in vec.items()}, judge=judge,
                          answer_sampling=GREEDY_ANSWER, completion_tokens=[3] * 4)
    method = METHODS["bump-plus"]
    assert method.needs == {"judge", "embedder"} and method.holdout_events == 3
    assert method.terms[0].options["q"] == 3 and method.terms[0].options["k"] == 8
    options = {**method.terms[0].options, "k": 1, "m_perm": 1}
    reward, parts = REWARD_TERMS["bump_plus"].compute(inputs, **options)
    chosen = {0: "[b0 | 4]", 1: "[T1 | 4]", 2: "[a2 | 4]", 3: "[b3 | 4]"}
    nearest = {0: 1, 1: 0, 2: 3, 3: 2}
    prompts = [c[0]["content"] for c in judge.seen]
    for u in range(4):
        backward = [p for p in prompts if p.startswith(f"Interaction: {chosen[u]}\n")]
        assert len(backward) == 1 and sorted(re.findall(r"profile u(\d)", backward[0])) == sorted([str(u), str(nearest[u])])
        forward = [p for p in prompts if p.startswith(f"User: profile u{u}\n")]
        assert len(forward) == 1 and chosen[u] in forward[0]  # the hard positive is the forward candidate
    assert parts["positive_is_target"][:, 0].tolist() == [0.0, 1.0, 0.0, 0.0] and reward.shape == (4, 1)
    with pytest.raises(ValueError, match="holdout_events >= q"):
        REWARD_TERMS["bump_plus"].compute(inputs, **{**options, "q": 4})


# --- DUET's native rating row: 10H + target-mode P_u + P_i (A6) ---------------------------------------------

def test_target_mode_profiles_see_the_target_and_feed_only_the_rating_row():
    from profilekit.contexts import DUET_RATING_CONTEXT, duet_rating_contexts, evaluation_contexts
    from profilekit.profiler import generate_target_profiles

    interactions, items, example = _domain()

    class Profiler(Recorder):
        def count_tokens(self, texts):
            return [len(t.split()) for t in texts]

        def generate(self, conversations, config, cache=None, progress=None):
            self.seen.extend(conversations)
            return GeneratedTexts([FULL] * len(conversations), [1] * len(conversations), [1] * len(conversations),
                                  [2.5] * len(conversations))

    chat = Profiler(None)
    target, _ = generate_target_profiles(chat, example, items, item_evidence(example, interactions, items), 100, None)
    shown = json.dumps(chat.seen)
    assert "Zyzzyx Road | Thriller" in shown and "[User 1 | 2]" in shown  # target mode: the item block is filled
    assert target[["target_user_profile", "target_item_profile"]].values.tolist() == [
        ["A fan of dark crime dramas.", "Appeals to thriller fans."]]
    assert target["target_seconds"].tolist() == [2.5]  # the cost of item conditioning, reported by the asset
    with pytest.raises(ValueError, match="item-aware"):
        generate_target_profiles(chat, example, items, [], 100, None, prompt=PROFILE_PROMPTS["profile"])

    # Stored like generated_profiles rows: a DUET row with target-mode columns, a BUMP row without them.
    secret_user, secret_item = "KNOWS-THE-TARGET user", "KNOWS-THE-TARGET item"
    trained = pd.DataFrame([
        {"domain": "d", "user_id": "u1", "cut": 0, "method": "duet", "profile": "blank-mode profile",
         "target_user_profile": secret_user, "target_item_profile": secret_item},
        {"domain": "d", "user_id": "u1", "cut": 0, "method": "bump", "profile": "bump profile",
         "target_user_profile": None, "target_item_profile": None},
    ])
    native = duet_rating_contexts(example, items, trained, 10)
    assert native[["method", "context"]].values.tolist() == [["duet", DUET_RATING_CONTEXT]]
    assert native["text"].iloc[0] == f"[Alien | 4], [Babe | 3]\n{secret_user}\nItem profile: {secret_item}"
    assert duet_rating_contexts(example, items, trained.drop(columns=["target_user_profile", "target_item_profile"]),
                                10).empty
    # Leakage: the contexts that N@10, multiple choice (and SCL, through the same profiles) read never hold them.
    base = pd.DataFrame([{"user_id": "u1", "cut": 0, "profile": "base profile"}])
    every = evaluation_contexts(example, items, base, trained, lambda xs: [1] * len(xs), 100, 10)
    assert DUET_RATING_CONTEXT not in set(every["context"])
    assert not every["text"].str.contains("KNOWS-THE-TARGET").any()
    assert "blank-mode profile" in every[every["method"] == "duet"]["text"].iloc[0]


def test_the_rating_row_asks_only_the_rating_question_and_is_paired_with_the_references_10hp():
    from profilekit.qa import answer_ratings, rating_metrics_table

    contexts = pd.DataFrame([{"domain": "d", "user_id": u, "cut": 0, "method": "duet", "context": "10H+P+Pi",
                              "text": f"duet {u}"} for u in "abc"])
    questions = pd.DataFrame([{"domain": "d", "user_id": u, "cut": 0, "options": ["w", "x", "y", "z"], "answer_index": 0,
                               "target_text": "Heat", "target_rating": r} for u, r in zip("abc", (5.0, 4.0, 3.0))])
    said = {"duet a": "5", "duet b": "3.5", "duet c": "no idea", "Base a": "4", "Base b": "4", "Base c": "2"}

    class Judge(Recorder):
        def generate(self, conversations, config, cache=None, progress=None):
            self.seen.extend(conversations)
            return GeneratedTexts([said[re.search(r"User: (\w+ \w)", c[0]["content"]).group(1)] for c in conversations],
                                  [1] * len(conversations), [1] * len(conversations), [0.0] * len(conversations))

    judge = Judge(None)
    native = answer_ratings(judge, contexts, questions, GREEDY_ANSWER, 3.5)
    assert len(judge.seen) == 3 and all("How would this user rate" in c[0]["content"] for c in judge.seen)
    assert not any("Which item" in c[0]["content"] for c in judge.seen)  # never the next-item question
    assert "mc_correct" not in native and native["rating_predicted"].tolist() == [5.0, 3.5, 3.5]
    assert answer_ratings(judge, contexts.iloc[:0], questions, GREEDY_ANSWER, 3.5).empty and len(judge.seen) == 3
    base = answer_ratings(judge, contexts.assign(method="Base", context="10H+P",
                                                 text=[f"Base {u}" for u in "abc"]), questions, GREEDY_ANSWER, 3.5)
    table = rating_metrics_table(pd.concat([base, native], ignore_index=True), RatingScale(1.0, 5.0))
    row = table[(table["method"] == "duet") & (table["vs_method"] == "Base")].iloc[0]
    assert row["context"] == "10H+P+Pi" and row["vs_context"] == "10H+P" and row["n_paired"] == 3
    assert row["rating_mae"] == pytest.approx((0 + 0.5 + 0.5) / 3)
    assert row["mean_diff_vs_ref"] == pytest.approx((0 + 0.5 + 0.5) / 3 - (1 + 0 + 1) / 3)
