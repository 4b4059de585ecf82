import math

import numpy as np
import pytest

from profilekit.metrics import ndcg_at_k, paired_significance, recall_at_k, target_ranks
from profilekit.text import fit_lines_to_budget, recent_history_text

pytestmark = pytest.mark.fast  # `make test-fast`: no Dagster run, subprocess, browser or real model


def test_ranks_from_scores_target_in_column_zero_ties_pessimistic():
    scores = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # best -> rank 1
            [0.5, 0.6, 0.7, 0.1],  # two above -> rank 3
            [0.5, 0.5, 0.1, 0.1],  # one tie -> rank 2
        ]
    )
    assert target_ranks(scores).tolist() == [1, 3, 2]


def test_ndcg_and_recall_by_hand():
    ranks = np.array([1, 2, 3, 10, 11, 100])
    expected_ndcg = [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(11), 0.0, 0.0]
    assert ndcg_at_k(ranks, 10) == pytest.approx(expected_ndcg)
    assert recall_at_k(ranks, 10).tolist() == [1, 1, 1, 1, 0, 0]
    assert ndcg_at_k(ranks, 10).mean() == pytest.approx(sum(expected_ndcg) / 6)


def test_paired_significance_detects_a_consistent_gain_and_not_noise():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 0.5, size=200)
    better = base + rng.uniform(0.05, 0.15, size=200)
    res = paired_significance(better, base)
    assert res["mean_diff"] > 0.05 and res["t_pvalue"] < 1e-10 and res["wilcoxon_pvalue"] < 1e-10
    same = paired_significance(base, base.copy())
    assert same["t_pvalue"] == 1.0
    noise = paired_significance(base + rng.normal(0, 0.01, size=200), base)
    assert noise["t_pvalue"] > 0.001
    with pytest.raises(ValueError):
        paired_significance(base, base[:-1])


def test_all_h_truncates_whole_events_from_the_oldest_side():
    lines = [f"[Movie {i} | 4]" for i in range(10)]

    def count(texts):
        return [len(t.split()) for t in texts]  # 4 "tokens" per line

    kept = fit_lines_to_budget(lines, 15, count)  # 3 lines of 4 tokens + separator
    assert kept == ["[Movie 7 | 4]", "[Movie 8 | 4]", "[Movie 9 | 4]"]
    assert fit_lines_to_budget(lines, 10_000, count) == lines
    assert fit_lines_to_budget(lines, 1, count) == ["[Movie 9 | 4]"]  # never empty: keep the newest event
    assert recent_history_text(lines, 2) == "[Movie 8 | 4], [Movie 9 | 4]"


def test_metric_chart_is_a_png_markdown_image():
    import base64

    import pandas as pd

    from profilekit.plots import grouped_bars_png, markdown_image

    table = pd.DataFrame(
        {"domain": ["d", "d"], "method": ["history", "Base"], "context": ["10-H", "P"], "ndcg10": [0.1, 0.2]}
    )
    png = grouped_bars_png(table, "ndcg10", "NDCG@10")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    md = markdown_image(png, "NDCG@10")
    assert md.startswith("![NDCG@10](data:image/png;base64,") and base64.b64decode(md.split(",", 1)[1][:-1]) == png


def test_metrics_by_setting_pairs_each_setting_with_its_own_reference():
    import pandas as pd

    from profilekit.evaluation import metrics_by_setting

    rows = []
    for setting, shift in (("cross-domain", 0.0), ("in-domain", 0.2)):
        for user in range(6):
            for method, base, slope in (("blue", 0.5, 0.01), ("Base", 0.3, 0.02)):
                value = base + shift + slope * user
                rows.append({"domain": "d", "user_id": str(user), "cut": 0, "method": method, "context": "10H+P",
                             "rank": 1, "ndcg10": value, "recall10": 1.0, "target_logp": -value, "setting": setting,
                             "train_domain": "s"})
    table = metrics_by_setting(pd.DataFrame(rows)).set_index(["setting", "method"])
    assert table.loc[("in-domain", "Base"), "ndcg10"] == pytest.approx(0.55)
    assert table.loc[("cross-domain", "Base"), "mean_diff_vs_ref"] == pytest.approx(-0.175)
    assert table.loc[("in-domain", "Base"), "mean_diff_vs_ref"] == pytest.approx(-0.175)  # not against the other setting
    assert table.loc[("in-domain", "Base"), "n_paired"] == 6 and math.isnan(table.loc[("in-domain", "blue"), "t_pvalue_vs_ref"])


def test_target_logp_is_blues_user_to_item_reward_and_is_paired_against_base(tmp_path):
    import pandas as pd

    from profilekit.embedder import EmbeddingCache
    from profilekit.evaluation import rank_metrics, score_contexts
    from profilekit.schemas import rec_metrics_schema

    class Lookup:  # an embedder whose vectors are given per text
        version = "lookup"

        def __init__(self, vectors: dict[str, np.ndarray]):
            self.vectors = vectors

        def encode(self, texts, progress=False):
            return np.stack([self.vectors[t] for t in texts])

    e = np.eye(3)
    items = {"t": e[0], "n1": e[1], "n2": e[2]}
    users = {"near": np.array([0.8, 0.6, 0.0]), "far": np.array([0.0, 0.6, 0.8])}
    contexts = pd.DataFrame([{"domain": "d", "user_id": u, "cut": 0, "method": m, "context": "P", "text": text}
                             for u in ("1", "2") for m, text in (("Base", "far"), ("blue", "near"))])
    candidates = pd.DataFrame([{"domain": "d", "user_id": u, "cut": 0, "position": p, "item_id": i}
                               for u in ("1", "2") for p, i in enumerate(("t", "n1", "n2"))])
    scores = score_contexts(contexts, candidates, items, Lookup(users), EmbeddingCache(tmp_path, "lookup"))
    # log softmax at tau = 0.07 of the target among [target, n1, n2] by cosine (the u2i term of BLUE's reward)
    near = np.array([0.8, 0.6, 0.0]) / 0.07
    expected = near[0] - np.log(np.exp(near).sum())
    blue = scores[scores["method"] == "blue"]["target_logp"].to_numpy()
    assert blue == pytest.approx([expected, expected])
    table = rank_metrics(scores).set_index("method")
    far = np.array([0.0, 0.6, 0.8]) / 0.07
    gain = expected - (far[0] - np.log(np.exp(far).sum()))
    assert table.loc["blue", "target_logp_diff_vs_base"] == pytest.approx(gain)
    assert math.isnan(table.loc["Base", "target_logp_diff_vs_base"])
    # Scores written before target_logp existed read back as NULL: left out, and the table still validates.
    older = scores[scores["method"] == "blue"].assign(method="rlpf", target_logp=np.nan)
    table = rank_metrics(pd.concat([scores, older], ignore_index=True))
    rec_metrics_schema.validate(table)
    rlpf = table.set_index("method").loc["rlpf"]
    assert math.isnan(rlpf["target_logp"]) and math.isnan(rlpf["target_logp_diff_vs_base"]) and rlpf["ndcg10"] > 0


def test_evaluation_contexts_hold_history_base_and_every_trained_method():
    import json

    import pandas as pd

    from profilekit.contexts import evaluation_contexts

    examples = pd.DataFrame([{"domain": "d", "user_id": "u", "cut": 0, "history_items": json.dumps(["a", "b"]),
                              "history_ratings": json.dumps([4.0, 5.0]), "target_item_id": "c"}])
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["Heat", "Babe", "Up"]})
    profile = lambda method: pd.DataFrame([{"user_id": "u", "cut": 0, "profile": f"{method} likes films", "method": method}])  # noqa: E731
    trained = pd.concat([profile("blue"), profile("rlpf")], ignore_index=True)
    contexts = evaluation_contexts(examples, items, profile("Base"), trained, lambda xs: [len(x) for x in xs], 100, 10)
    assert list(zip(contexts["method"], contexts["context"])) == [
        ("history", "All-H"), ("history", "10-H"), ("Base", "P"), ("Base", "10H+P"), ("blue", "P"), ("blue", "10H+P"),
        ("rlpf", "P"), ("rlpf", "10H+P"),
    ]
    assert contexts.set_index(["method", "context"]).loc[("rlpf", "P"), "text"] == "rlpf likes films"
    assert len(evaluation_contexts(examples, items, profile("Base"), pd.DataFrame(), lambda xs: [1] * len(xs), 100, 10)) == 4


def test_every_method_is_paired_against_blue_and_against_base():
    import pandas as pd

    from profilekit.evaluation import summarize
    from profilekit.metrics import with_significance

    rows = []
    for user in range(8):
        for method, context, value in (("blue", "10H+P", 0.5), ("Base", "10H+P", 0.3), ("rlpf", "10H+P", 0.4),
                                       ("history", "10-H", 0.2)):
            rows.append({"domain": "d", "user_id": str(user), "cut": 0, "method": method, "context": context,
                         "rank": 1, "ndcg10": value + 0.01 * user * (method == "rlpf"), "recall10": 1.0,
                         "target_logp": -1.0})
    scores = pd.DataFrame(rows)
    table = with_significance(summarize(scores), scores, "ndcg10").set_index("method")
    assert table.loc["rlpf", "mean_diff_vs_ref"] == pytest.approx(0.4 + 0.035 - 0.5)
    assert table.loc["rlpf", "mean_diff_vs_base"] == pytest.approx(0.4 + 0.035 - 0.3)
    assert table.loc["rlpf", "t_pvalue_vs_base"] < 0.01 and table.loc["rlpf", "n_paired_vs_base"] == 8
    assert table.loc["history", "mean_diff_vs_base"] == pytest.approx(-0.1)  # paired with Base's 10H+P
    assert math.isnan(table.loc["Base", "t_pvalue_vs_base"]) and table.loc["Base", "n_paired_vs_base"] == 0
    assert table.loc["Base", "mean_diff_vs_ref"] == pytest.approx(-0.2)
