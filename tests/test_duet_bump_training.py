"""DUET and BUMP train through the one trainer on the tiny chat model, from training examples built by
`training_examples` on a small synthetic domain (DUET's item evidence included)."""

import json

import numpy as np
import pandas as pd
import pytest

from profilekit.embedder import Embedder
from profilekit.llm.sampler import SamplingConfig
from profilekit.methods import METHODS
from profilekit.profiler import ChatLM, generate_profiles
from profilekit.prompts import DUET_SCAFFOLD, PROFILE_PROMPTS, duet_valid, parse_duet
from profilekit.protocol import Protocol, filter_histories, sample_candidates
from profilekit.training import GRPOConfig, RewardModels, _pad_batch, train_profiler, training_examples


def _domain(users: int = 6, events: int = 22, catalog: int = 60):
    rng = np.random.default_rng(0)
    start = pd.Timestamp("2021-01-01", tz="UTC")
    rows = []
    for u in range(users):
        for k, item in enumerate(rng.choice(catalog, size=events, replace=False)):
            rows.append({"domain": "syn", "user_id": f"u{u}", "item_id": f"i{item}", "rating": float(rng.integers(1, 6)),
                         "timestamp": start + pd.Timedelta(hours=k * 10 + u), "seq": len(rows)})
    interactions = pd.DataFrame(rows)
    items = pd.DataFrame({"domain": "syn", "item_id": [f"i{k}" for k in range(catalog)],
                          "title": [f"Film {k}" for k in range(catalog)],
                          "text": [f"Film {k} | Genre {k % 5}" for k in range(catalog)]})
    protocol = Protocol(test_fraction=0.0, train_negatives=8, test_negatives=8)
    histories, _ = filter_histories(interactions, protocol)
    candidates = sample_candidates(histories, interactions, items["item_id"].tolist(), protocol)
    return interactions, items, histories, candidates


def test_training_examples_carry_what_duet_and_bump_need(tiny_chat_dir):
    interactions, items, histories, candidates = _domain()
    count = lambda texts: [len(t.split()) for t in texts]  # noqa: E731
    duet = training_examples(histories, candidates, items, count, 64, 10, 0, PROFILE_PROMPTS["duet"], interactions)
    train = histories.sort_values(["user_id", "cut"]).reset_index(drop=True)
    assert duet.target_ratings == train["target_rating"].tolist() and duet.rating_scale == (1.0, 5.0, 1.0)
    assert duet.heldout[0] == f"[Film {train['target_item_id'][0][1:]} | {int(train['target_rating'][0])}]"
    for k, ex in train.iterrows():
        # The item block lists only other users' ratings of the target before its time.
        earlier = interactions[(interactions["item_id"] == ex["target_item_id"]) & (interactions["user_id"] != ex["user_id"])
                               & (interactions["timestamp"] < ex["target_timestamp"])]
        prompt = duet.messages[k][1]["content"]
        assert prompt.count("[User ") == min(len(earlier), 10), k
        assert items.set_index("item_id").loc[ex["target_item_id"], "text"] in prompt
    # blank_item_prob's prompts: the same user block, the item block blanked (no target text, no ratings of it).
    assert len(duet.blank_messages) == len(duet) and all("(not given)" in m[1]["content"] for m in duet.blank_messages)
    assert all("[User " not in json.dumps(m) for m in duet.blank_messages)
    plain = training_examples(histories, candidates, items, count, 64, 10, 0)
    assert all("[User " not in json.dumps(m) for m in plain.messages) and plain.blank_messages == []
    with pytest.raises(ValueError, match="needs the interactions"):
        training_examples(histories, candidates, items, count, 64, 10, 0, PROFILE_PROMPTS["duet"])


EXPECTED = {
    "duet": {"reward/duet_rating", "reward/duet_rating/compliance", "reward/duet_rating/format_fail",
             "reward/duet_rating/judge_unparsed", "reward/duet_rating/valid_frac", "reward/duet_rating/rating_mean",
             "reward/duet_rating/example_copied"},
    "bump": {"reward/bump", "reward/bump/fwd", "reward/bump/bwd", "reward/bump/len_penalty",
             "reward/bump/penalised_frac", "reward/bump/judge_unparsed", "reward/bump/K", "reward/bump/chance"},
    "bump-forward": {"reward/bump/fwd"},
    "bump-pointwise": {"reward/bump/fwd", "reward/bump/bwd"},
}


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_duet_and_bump_train_through_the_one_loop(tiny_chat_dir, tmp_path, name, embedder):
    interactions, items, histories, candidates = _domain()
    chat = ChatLM(tiny_chat_dir)  # the policy, and (a frozen copy of the base profiler) the judge
    judge = ChatLM(tiny_chat_dir)
    method = METHODS[name]
    data, validation = (training_examples(h, candidates, items, chat.count_tokens, 64, 10, 0,
                                          PROFILE_PROMPTS[method.prompt], interactions)
                        for h in (histories, histories[histories["user_id"].isin(["u0", "u1", "u2"])]))
    vectors = dict(zip(items["item_id"], np.random.default_rng(0).normal(size=(len(items), 384)).astype(np.float32)))
    # One validation sample: BUMP's pointwise judge makes every extra sample cost a prefill per candidate pair
    # (averaging samples is tested in test_learning).
    config = GRPOConfig(steps=1, users_per_step=3, rollouts=2, max_new_tokens=12, learning_rate=1e-3,
                        validation_samples=1)
    before = np.asarray(chat.lm.model.embedder.input_embedding.value).copy()
    # Three of the training users double as validation users here: what is checked is that the method's own terms
    # (DUET's tags and judge, BUMP's pools and length penalty) score validation profiles as they score rollouts.
    result = train_profiler(chat, data, method, config, tmp_path / name, RewardModels(embedder, vectors, judge),
                            log=lambda _: None, validation=validation)
    assert result.step == 1 and [r["step"] for r in result.log] == [1]
    assert [r["step"] for r in result.validation] == [0, 1]
    for record in result.validation:
        assert len(record["rewards"]) == len(validation) == 3 and record["samples"] == 1
        assert {"P/ndcg10", "10H+P/ndcg10"} | EXPECTED[name] <= set(record)
    record = result.log[-1]
    assert EXPECTED[name] <= set(record), sorted(record)
    if name == "bump-forward":
        assert "reward/bump/bwd" not in record
    if name.startswith("bump"):
        assert record["reward/bump/K"] <= 2 and 0 < record["reward/bump/fwd"] <= 1
    else:  # the sampler writes DUET's tags: every rollout of even a random policy parses
        assert record["reward/duet_rating/compliance"] == 1.0 and record["reward/duet_rating/format_fail"] == 0.0
        assert all(r["reward/duet_rating/compliance"] == 1.0 for r in result.validation)
    changed = not np.array_equal(before, np.asarray(chat.lm.model.embedder.input_embedding.value))
    assert changed == any(not r.get("skipped_update") for r in result.log)


def test_pointwise_log_odds_do_not_depend_on_the_batch(tiny_chat_dir):
    """One prefill per conversation, padded in a batch: each conversation's log-odds equal those it gets alone."""
    from profilekit.prompts import bump_pointwise_messages

    chat = ChatLM(tiny_chat_dir, batch_size=3)
    conversations = [bump_pointwise_messages("forward", f"likes film {k}" * (k + 1), f"[Film {k} | 4]") for k in range(4)]
    batched = chat.yes_no_logodds(conversations)
    alone = np.array([chat.yes_no_logodds([c])[0] for c in conversations])
    assert batched.shape == (4,) and np.isfinite(batched).all() and len(set(np.round(batched, 6))) > 1
    assert np.allclose(batched, alone, atol=1e-4)


def test_duets_scaffold_makes_every_profile_strictly_valid_and_keeps_its_tags_out_of_the_loss(tiny_chat_dir):
    """The packaged tokenizer's scaffold: its pieces decode back to DUET's tags, tokens holding "<" end a free
    segment; a random policy's DUET profiles all parse strictly, with the model's text in each of the six fields;
    the tags are forced, and the loss mask leaves them out."""
    chat = ChatLM(tiny_chat_dir)
    scaffold = chat.scaffold(DUET_SCAFFOLD)
    assert [chat.tokenizer.decode(list(seq)) for seq in scaffold.forced] == list(DUET_SCAFFOLD.pieces)
    assert all("<" in chat.tokenizer.decode([t]) for t in scaffold.stop_ids)
    assert chat.tokenizer.convert_tokens_to_ids("<|im_end|>") in scaffold.stop_ids
    interactions, items, histories, _ = _domain()
    profiles, _ = generate_profiles(chat, histories.head(4), items, 64, SamplingConfig(temperature=1.0, seed=5),
                                    prompt=PROFILE_PROMPTS["duet"])
    assert (profiles["profile"].str.len() > 0).all() and not profiles["profile"].str.contains("<").any()
    gen = chat.sampler.generate([chat.encode_chat([{"role": "user", "content": "Hi"}])],
                                chat.sampling_for(PROFILE_PROMPTS["duet"], SamplingConfig(temperature=1.0, seed=5)),
                                samples=3)
    for tokens, forced in zip(gen.tokens, gen.forced):
        parsed = parse_duet(chat.tokenizer.decode(tokens))
        assert duet_valid(parsed, "strict"), parsed
        assert sum(forced) == sum(map(len, scaffold.forced)) and not all(forced)
    _, _, completion, mask = _pad_batch([[1, 2]] * 3, gen.tokens, 0, GRPOConfig(), gen.forced)
    for row, tokens, forced in zip(mask, gen.tokens, gen.forced):
        assert row[: len(tokens)].tolist() == [not f for f in forced] and not row[len(tokens):].any()
