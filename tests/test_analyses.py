"""The comparison views on hand-made frames: Table-6 ablation rows with paired tests, dominant genres, a seeded
t-SNE, the quality/cost frontier, their plots, and the UI table metadata."""

import io
import json
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from assets._common import metadata_table
from profilekit.analyses import (
    ABLATION_FAMILIES,
    ABLATION_VARIANTS,
    ablation_table,
    ablation_tables,
    budget_mismatches,
    dominant_genres,
    efficiency_table,
    embedding_seconds,
    pareto_front,
    tsne_coordinates,
    tsne_table,
)
from profilekit.methods import METHODS
from profilekit.plots import frontier_png, tsne_png
from profilekit.schemas import ablation_metrics_schema, efficiency_frontier_schema, user_embedding_tsne_schema

pytestmark = pytest.mark.fast


def _rec(method, context, ndcg):
    return pd.DataFrame({"domain": "d", "user_id": [f"u{i}" for i in range(len(ndcg))], "cut": 0, "method": method,
                         "context": context, "ndcg10": ndcg, "recall10": [float(v > 0) for v in ndcg]})


def _qa(method, context, correct):
    return pd.DataFrame({"domain": "d", "user_id": [f"u{i}" for i in range(len(correct))], "cut": 0, "method": method,
                         "context": context, "mc_correct": correct})


def test_ablation_variants_are_the_registered_blue_variants():
    assert set(ABLATION_VARIANTS) == {m for m in METHODS if m.startswith("blue-")} and "blue" not in ABLATION_VARIANTS
    assert {"blue-no-text", "blue-no-emb", "blue-p-view", "blue-10hp-view", "blue-u2i", "blue-i2u"} <= set(ABLATION_VARIANTS)


def test_ablation_table_deltas_and_paired_tests_against_blue_on_the_same_users():
    blue_p, blue_hp = [1.0, 0.5, 0.0, 0.3, 0.2], [0.6, 0.5, 0.4, 0.3, 1.0]
    var_p = [0.5, 0.5, 0.0, 0.1, 0.0]
    rec = pd.concat([
        _rec("blue", "P", blue_p), _rec("blue", "10H+P", blue_hp),
        _rec("blue-no-text", "P", var_p), _rec("blue-no-text", "10H+P", blue_hp[:3]),  # 3 users only
        _rec("rlaif", "P", [0.0] * 5), _rec("Base", "10H+P", [0.0] * 5),  # not ablations: left out
    ], ignore_index=True)
    qa = pd.concat([_qa("blue", "P", [1.0, 1.0, 0.0, 1.0]), _qa("blue-no-text", "P", [0.0, 1.0, 0.0, 0.0])],
                   ignore_index=True)
    table = ablation_table(rec, qa, ["blue-no-text", "blue-no-emb"])
    ablation_metrics_schema.validate(table)
    assert list(zip(table["method"], table["context"])) == [
        ("blue", "P"), ("blue", "10H+P"), ("blue-no-text", "P"), ("blue-no-text", "10H+P")]  # untrained: no rows
    assert set(table["reference"]) == {"blue"}
    row = table.iloc[2]
    assert row["ndcg10"] == pytest.approx(np.mean(var_p)) and row["n_examples"] == 5 and row["n_paired"] == 5
    assert row["delta_ndcg10"] == pytest.approx(np.mean(var_p) - np.mean(blue_p))
    assert row["ndcg10_t_pvalue"] == pytest.approx(stats.ttest_rel(var_p, blue_p).pvalue)
    assert row["ndcg10_wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(var_p, blue_p).pvalue)
    assert row["recall10"] == pytest.approx(0.6) and row["delta_recall10"] == pytest.approx(0.6 - 0.8)
    assert row["mc_accuracy"] == pytest.approx(0.25) and row["delta_mc_accuracy"] == pytest.approx(-0.5)
    assert row["n_qa"] == row["n_qa_paired"] == 4
    partial = table.iloc[3]  # paired on the 3 users both have
    assert partial["n_paired"] == 3 and partial["delta_ndcg10"] == pytest.approx(0.0)
    assert partial["ndcg10_t_pvalue"] == 1.0 and np.isnan(partial["mc_accuracy"]) and partial["n_qa"] == 0
    reference = table[table["method"] == "blue"]
    assert reference["delta_ndcg10"].isna().all() and reference["ndcg10_t_pvalue"].isna().all()
    assert reference.iloc[1]["ndcg10"] == pytest.approx(np.mean(blue_hp))


def test_duet_and_bump_variants_are_tested_against_their_own_method():
    full, forward = [0.5, 0.4, 0.3, 0.2], [0.1, 0.4, 0.2, 0.0]
    rec = pd.concat([
        _rec("bump", "P", full), _rec("bump-forward", "P", forward), _rec("blue", "P", [0.9] * 4),
        _rec("duet-zero-shot", "10H+P", [0.3, 0.1]), _rec("rlaif", "P", [0.0] * 4),
    ], ignore_index=True)
    table = ablation_tables(rec, _qa("x", "P", [])[:0])
    ablation_metrics_schema.validate(table)
    assert list(zip(table["reference"], table["method"])) == [
        ("blue", "blue"), ("duet", "duet-zero-shot"), ("bump", "bump"), ("bump", "bump-forward")]
    row = table[table["method"] == "bump-forward"].iloc[0]
    assert row["n_paired"] == 4 and row["delta_ndcg10"] == pytest.approx(np.mean(forward) - np.mean(full))
    assert row["ndcg10_t_pvalue"] == pytest.approx(stats.ttest_rel(forward, full).pvalue)
    assert table[table["method"] == "duet-zero-shot"]["n_paired"].eq(0).all()  # no trained DUET to pair with
    assert set(ABLATION_FAMILIES["bump"]) >= {"bump-forward", "bump-backward", "bump-no-length-penalty"}
    assert "duet-zero-shot" in ABLATION_FAMILIES["duet"] and ablation_tables(rec[:0], rec[:0]).empty


def test_ablation_rows_carry_training_steps_and_name_variants_with_another_budget():
    rec = pd.concat([_rec(m, "P", [0.5, 0.4]) for m in
                     ("blue", "blue-no-text", "blue-u2i", "blue-i2u", "bump", "bump-forward", "duet", "duet-zero-shot")],
                    ignore_index=True)
    steps = {"blue": 200, "blue-no-text": 200, "blue-u2i": 4, "bump": 200, "bump-forward": 200, "duet": 200,
             "duet-zero-shot": 0}
    table = ablation_tables(rec, _qa("x", "P", [])[:0], steps)
    ablation_metrics_schema.validate(table)
    assert dict(zip(table["method"], table["training_steps"])) == {**steps, "blue-i2u": pd.NA}
    assert budget_mismatches(table) == ["blue-u2i: 4 steps, blue: 200", "blue-i2u: unknown steps, blue: 200"]
    assert ablation_tables(rec, _qa("x", "P", [])[:0])["training_steps"].isna().all()
    assert budget_mismatches(ablation_tables(rec, _qa("x", "P", [])[:0])) == []  # nothing known, nothing claimed


def test_ablation_table_without_blue_keeps_the_variants_untested():
    table = ablation_table(_rec("blue-u2i", "P", [0.2, 0.4]), _qa("x", "P", [])[:0], ["blue-u2i"])
    assert list(table["method"]) == ["blue-u2i"] and table["n_paired"].eq(0).all() and table["delta_ndcg10"].isna().all()


def test_dominant_genre_is_the_most_frequent_label_over_the_history():
    items = pd.DataFrame({
        "item_id": ["a", "b", "c", "d"],
        "title": ["Heat (1995)", "Toy Story (1995)", "Alien (1979)", "No Genre"],
        "text": ["Heat (1995) | Action, Crime, Thriller", "Toy Story (1995) | Animation, Children's, Comedy",
                 "Alien (1979) | Action, Horror, Sci-Fi", "No Genre"],
    })
    examples = pd.DataFrame({
        "domain": "ml", "user_id": ["u1", "u2", "u3"], "cut": 0,
        "history_items": [json.dumps(["b", "a", "c"]), json.dumps(["b", "d"]), json.dumps(["d"])],
    })
    got = dominant_genres(examples, items).set_index("user_id")["dominant_genre"].to_dict()
    # u1: Action twice; u2: a tie among Toy Story's labels goes to the first; u3: no labelled item
    assert got == {"u1": "Action", "u2": "Animation", "u3": "unknown"}


def _clusters(seed=0, per=12, dim=16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim)) * 4
    points = np.concatenate([c + rng.normal(size=(per, dim)) for c in centres])
    return points / np.linalg.norm(points, axis=1, keepdims=True), np.repeat([0, 1, 2], per)


def test_tsne_is_identical_on_a_rebuild_and_keeps_clusters_apart():
    vectors, labels = _clusters()
    first, again = tsne_coordinates(vectors, seed=7), tsne_coordinates(vectors.copy(), seed=7)
    assert first.shape == (36, 2) and np.array_equal(first, again)
    centres = np.stack([first[labels == k].mean(axis=0) for k in range(3)])
    within = max(np.linalg.norm(first[labels == k] - centres[k], axis=1).mean() for k in range(3))
    between = min(np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3))
    assert between > 2 * within
    with pytest.raises(ValueError, match="at least 3 points"):
        tsne_coordinates(vectors[:2], seed=0)


def test_tsne_table_rows_genres_and_plot():
    vectors, _ = _clusters(per=4)
    users = [f"u{i}" for i in range(4)]
    contexts = pd.DataFrame({"domain": "d", "user_id": users * 3, "cut": 0,
                             "method": ["history"] * 4 + ["history"] * 4 + ["blue"] * 4,
                             "context": ["All-H"] * 4 + ["10-H"] * 4 + ["10H+P"] * 4, "text": "t"})
    genres = pd.DataFrame({"domain": "d", "user_id": users[:3], "cut": 0, "dominant_genre": ["A", "B", "A"]})
    table = tsne_table(contexts, vectors, genres, seed=3)
    user_embedding_tsne_schema.validate(table)
    assert len(table) == 12 and table.loc[table["user_id"] == "u3", "dominant_genre"].eq("unknown").all()
    assert np.array_equal(table[["x", "y"]].to_numpy(), tsne_coordinates(vectors, seed=3))
    png = tsne_png(table, "t-SNE")
    assert png.startswith(b"\x89PNG") and _png_size(png) == (1200, 500)


def test_pareto_front_marks_the_points_nothing_beats_on_both_axes():
    seconds = np.array([0.01, 0.02, 1.0, 2.0, 2.0, 0.5])
    quality = np.array([0.10, 0.08, 0.20, 0.25, 0.20, 0.20])
    # 0.02/0.08 is beaten by 0.01/0.10; 2.0/0.20 by 1.0/0.20; 1.0/0.20 by 0.5/0.20
    assert pareto_front(seconds, quality).tolist() == [True, False, False, True, False, True]


def test_embedding_seconds_times_one_call_on_a_fixed_sample_of_the_texts():
    calls = []

    def encode(batch):
        calls.append(list(batch))
        time.sleep(0.001 * len(batch))

    texts = [f"user {i}" for i in range(1000)]
    rate = embedding_seconds(texts, encode, sample=64)
    warm_up, timed = calls
    assert len(warm_up) == 1 and len(timed) == 64 and len(set(timed)) == 64 and set(timed) <= set(texts)
    assert rate >= 0.001  # seconds per text of the timed call
    embedding_seconds(texts, encode, sample=64)
    assert calls[3] == timed  # the same sample on a rebuild
    embedding_seconds(texts[:10], encode, sample=64)
    assert calls[5] == texts[:10]  # fewer texts than the sample: all of them
    assert embedding_seconds([], encode) == 0.0


def test_efficiency_table_adds_generation_and_embedding_seconds_and_marks_the_frontier():
    metrics = pd.DataFrame({
        "domain": "d", "method": ["history", "history", "Base", "Base", "blue", "blue"],
        "context": ["All-H", "10-H", "P", "10H+P", "P", "10H+P"], "n_examples": 4,
        "ndcg10": [0.10, 0.12, 0.05, 0.15, 0.06, 0.14], "recall10": [0.2, 0.3, 0.1, 0.4, 0.1, 0.3],
    })
    profiles = pd.DataFrame({"method": ["Base", "Base", "blue", "blue"], "seconds": [1.0, 3.0, 0.5, 0.7]})
    embed = pd.DataFrame({"method": ["history", "history", "Base", "blue"], "context": ["All-H", "10-H", "10H+P", "10H+P"],
                          "seconds_per_user": [0.004, 0.002, 0.003, 0.003]})
    table = efficiency_table(metrics, profiles, embed)
    efficiency_frontier_schema.validate(table)
    rows = table.set_index(["method", "context"])
    assert len(table) == 4 and ("Base", "P") not in rows.index  # P alone is not a point
    assert rows.loc[("Base", "10H+P"), "seconds_per_user"] == pytest.approx(2.003)
    assert rows.loc[("blue", "10H+P"), "generation_seconds"] == pytest.approx(0.6)
    assert rows.loc[("history", "All-H"), "generation_seconds"] == 0.0
    assert table["seconds_per_user"].is_monotonic_increasing
    assert rows["on_frontier"].to_dict() == {("history", "10-H"): True, ("history", "All-H"): False,
                                            ("blue", "10H+P"): True, ("Base", "10H+P"): True}
    png = frontier_png(table, "frontier")
    assert _png_size(png) == (700, 400)


def test_embedding_seconds_times_one_batched_call_after_a_warm_up():
    calls = []
    assert embedding_seconds([], calls.append) == 0.0 and calls == []
    seconds = embedding_seconds(["a", "b", "c", "d"], calls.append)
    assert calls == [["a"], ["a", "b", "c", "d"]] and 0.0 <= seconds < 0.01


def test_metadata_table_is_typed_and_json_safe():
    frame = pd.DataFrame({"method": ["blue", "Base"], "n": np.array([3, 4], dtype="int64"), "p": [np.nan, 0.123456],
                          "front": [True, False], "steps": pd.array([200, None], dtype="Int64")})
    value = metadata_table(frame)
    assert [(c.name, c.type) for c in value.schema.columns] == [("method", "string"), ("n", "int"), ("p", "float"),
                                                                ("front", "bool"), ("steps", "int")]
    data = [r.data for r in value.records]
    assert data == [{"method": "blue", "n": 3, "p": None, "front": True, "steps": 200},
                    {"method": "Base", "n": 4, "p": 0.1235, "front": False, "steps": None}]
    assert json.loads(json.dumps(data, allow_nan=False)) == data  # what the UI's JSON.parse needs


def _png_size(png: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        image.load()
        return image.size



def test_ablation_grid_trains_blue_first_then_each_variant_then_evaluates_every_domain():
    from dagster import MultiPartitionKey

    from jobs.ablation_grid import plan
    from orchestration.definitions import defs

    config = {"resources": {"training": {"config": {"steps": 7}}}}
    steps = plan("src", ["src", "other"], ["blue-u2i", "blue-no-text"], config)
    key = lambda method, domain: MultiPartitionKey({"method": method, "domain": domain})  # noqa: E731
    assert steps == [
        ("ablation_training", key("blue", "src"), config), ("profiling", key("blue", "other"), {}),
        ("ablation_training", key("blue-u2i", "src"), config), ("profiling", key("blue-u2i", "other"), {}),
        ("ablation_training", key("blue-no-text", "src"), config), ("profiling", key("blue-no-text", "other"), {}),
        ("evaluation", "src", {}), ("analyses", "src", {}), ("evaluation", "other", {}), ("analyses", "other", {}),
    ]  # one training config for BLUE and every variant: the same recipe and budget
    for job in {name for name, _, _ in steps}:
        defs.resolve_job_def(job)  # every job of the plan exists
    selected = {k.to_user_string() for k in defs.resolve_job_def("analyses").asset_layer.selected_asset_keys}
    assert selected == {"ablation_metrics", "user_embedding_tsne", "efficiency_frontier"}
    data = {k.to_user_string() for k in defs.resolve_job_def("domain_data").asset_layer.selected_asset_keys}
    assert not selected & data  # the analyses need the metrics, which domain_data does not compute
