"""Faulty native files and registries: each case is skipped and counted with its reason, or fails with a message
naming the file (and line) — never a raw traceback, never a silent change of meaning."""

import gzip
import hashlib
import json
import pickle
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from profilekit import sources
from profilekit.domains import DomainSource, RegistryError, load_registry, validate_domain_name
from profilekit.readers import DataError, read_domain
from profilekit.sources import SourceError, fetch_wheel
from tests.native_files import amazon_meta, amazon_review, google_meta, google_review, write_lines

pytestmark = pytest.mark.fast  # `make test-fast`: no Dagster run, subprocess, browser or real model

J = json.dumps
T0 = 1_700_000_000_000  # 2023-11-14 in ms


def _amazon(tmp_path: Path, reviews: list[str], metas: list[str] | None = None, **source) -> DomainSource:
    write_lines(tmp_path / "Clothing.jsonl", reviews)
    write_lines(tmp_path / "meta_Clothing.jsonl", metas or [J(amazon_meta("A1", "Scarf")), J(amazon_meta("A2", "Hat"))])
    return DomainSource(name="fixture", format="amazon2023", path=tmp_path, **{"rating_scale": (1.0, 5.0), **source})


# ---------------------------------------------------------------- 1. one bad line, a damaged file
def test_non_utf8_line_is_skipped_and_counted(tmp_path):
    source = _amazon(tmp_path, [J(amazon_review("u1", "A1", 5.0, T0)), J(amazon_review("u1", "A2", 4.0, T0 + 1))])
    with open(tmp_path / "Clothing.jsonl", "ab") as fh:
        fh.write(b'{"user_id": "u2", "title": "caf\xe9", "parent_asin": "A1", "rating": 3, "timestamp": 1}\n')
    tables = read_domain(source, tmp_path)
    assert tables.report.skipped["undecodable_line"] == 1
    assert len(tables.interactions) == 2


def _gz_bytes(lines: list[str]) -> bytes:
    return gzip.compress(("\n".join(lines) + "\n").encode())


def test_truncated_gzip_fails_naming_file_and_last_good_line(tmp_path):
    lines = [J(amazon_review(f"u{i}", "A1", 5.0, T0 + i)) for i in range(2000)]
    blob = _gz_bytes(lines)
    (tmp_path / "Clothing.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    write_lines(tmp_path / "meta_Clothing.jsonl", [J(amazon_meta("A1", "Scarf"))])
    source = DomainSource(name="fixture", format="amazon2023", path=tmp_path)
    with pytest.raises(DataError, match=r"Clothing\.jsonl\.gz: damaged after line \d+ \(EOFError") as info:
        read_domain(source, tmp_path)
    last_good = int(str(info.value).split("after line ")[1].split()[0])
    assert 0 < last_good < 2000
    assert "keep_read_lines" in str(info.value)

    kept = read_domain(DomainSource(name="fixture", format="amazon2023", path=tmp_path, on_corrupt_file="keep_read_lines"), tmp_path)
    assert kept.report.skipped["truncated_file"] == 1
    assert len(kept.interactions) == last_good
    assert kept.report.as_metadata()["truncated_files"].endswith(f"Clothing.jsonl.gz (after line {last_good})")


def test_corrupt_gzip_header_fails_naming_the_file(tmp_path):
    (tmp_path / "Clothing.jsonl.gz").write_bytes(b"this is not gzip at all\n")
    write_lines(tmp_path / "meta_Clothing.jsonl", [J(amazon_meta("A1", "Scarf"))])
    with pytest.raises(DataError, match=r"Clothing\.jsonl\.gz: damaged after line 0 \(BadGzipFile"):
        read_domain(DomainSource(name="fixture", format="amazon2023", path=tmp_path), tmp_path)


# ---------------------------------------------------------------- 1+2. timestamps: units, one odd value
def test_one_microsecond_timestamp_is_counted_not_fatal(tmp_path):
    reviews = [J(amazon_review("u1", "A1", 5.0, T0)), J(amazon_review("u1", "A2", 4.0, T0 * 1000))]
    tables = read_domain(_amazon(tmp_path, reviews), tmp_path)
    assert tables.report.skipped["implausible_timestamp"] == 1
    assert tables.interactions["item_id"].tolist() == ["A1"]


def test_timestamps_in_seconds_are_detected_per_file(tmp_path):
    """Amazon files in seconds (older dumps) must not land in 1970 and move the target."""
    write_lines(tmp_path / "Clothing.jsonl", [J(amazon_review("u1", "A1", 5.0, T0 // 1000)), J(amazon_review("u1", "A2", 4.0, T0 // 1000 + 60))])
    write_lines(tmp_path / "Shoes.jsonl", [J(amazon_review("u1", "A3", 3.0, T0 + 120_000))])
    write_lines(tmp_path / "meta_Clothing.jsonl", [J(amazon_meta(a, a)) for a in ("A1", "A2", "A3")])
    tables = read_domain(DomainSource(name="fixture", format="amazon2023", path=tmp_path), tmp_path)
    stamps = tables.interactions.set_index("item_id")["timestamp"]
    assert stamps["A1"] == pd.Timestamp("2023-11-14 22:13:20", tz="UTC")
    assert stamps["A2"] - stamps["A1"] == pd.Timedelta(seconds=60)
    assert stamps["A3"] > stamps["A2"]  # the ms file's event is still the latest
    units = tables.report.as_metadata()["timestamp_units"]
    assert "Clothing.jsonl: s" in units and "Shoes.jsonl: ms" in units


def test_google_local_times_in_seconds_are_detected(tmp_path):
    write_lines(tmp_path / "review-Hawaii.json", [J(google_review("101", "g1", 5, 1_600_000_000)), J(google_review("101", "g2", 4, 1_600_000_100))])
    write_lines(tmp_path / "meta-Hawaii.json", [J(google_meta("g1", "Kona Cafe")), J(google_meta("g2", "Poke Bar"))])
    tables = read_domain(DomainSource(name="fixture", format="google_local", path=tmp_path, rating_scale=(1.0, 5.0)), tmp_path)
    assert tables.interactions["timestamp"].min().year == 2020


# ---------------------------------------------------------------- 2. ratings off the scale, booleans
def test_out_of_scale_and_boolean_ratings_are_skipped_with_reasons(tmp_path):
    reviews = [J(amazon_review("u1", "A1", 5.0, T0))] + [
        J(amazon_review("u1", "A2", r, T0 + k + 1)) for k, r in enumerate([7, -3, 0, 1e300])
    ] + [J(amazon_review("u1", "A2", True, T0 + 10))]
    tables = read_domain(_amazon(tmp_path, reviews), tmp_path)
    assert tables.report.skipped["rating_out_of_scale"] == 4
    assert tables.report.skipped["non_numeric_rating"] == 1
    assert tables.interactions["rating"].tolist() == [5.0]


def test_a_registry_rating_scale_is_used(tmp_path):
    path = tmp_path / "domains.yaml"
    (tmp_path / "data").mkdir()
    path.write_text("domains:\n  tenpoint:\n    format: amazon2023\n    path: data\n    rating_scale: [1, 10]\n")
    source = load_registry(path).source("tenpoint")
    assert source.rating_scale == (1.0, 10.0)
    tables = read_domain(_amazon(tmp_path / "data", [J(amazon_review("u1", "A1", 7, T0))], rating_scale=source.rating_scale), tmp_path)
    assert tables.interactions["rating"].tolist() == [7.0]


# ---------------------------------------------------------------- 7. weaker points
def test_utf8_bom_keeps_the_first_record(tmp_path):
    source = _amazon(tmp_path, [J(amazon_review("u1", "A1", 5.0, T0)), J(amazon_review("u1", "A2", 4.0, T0 + 1))])
    path = tmp_path / "Clothing.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    tables = read_domain(source, tmp_path)
    assert len(tables.interactions) == 2 and tables.report.skipped["malformed_line"] == 0


def test_utf8_bom_in_recbole_header_keeps_the_user_column(tmp_path):
    (tmp_path / "toy.inter").write_bytes(
        b"\xef\xbb\xbfuser_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t978300760\n"
    )
    (tmp_path / "toy.item").write_text("item_id:token\tmovie_title:token_seq\n10\tHeat\n")
    tables = read_domain(DomainSource(name="fixture", format="recbole", path=tmp_path), tmp_path)
    assert tables.interactions["user_id"].tolist() == ["1"]


def test_an_empty_extra_shard_is_recorded_not_fatal(tmp_path):
    source = _amazon(tmp_path, [J(amazon_review("u1", "A1", 5.0, T0))])
    (tmp_path / "Clothing_part2.jsonl").write_text("")
    tables = read_domain(source, tmp_path)
    assert len(tables.interactions) == 1
    assert tables.report.as_metadata()["files_without_valid_line"].endswith("Clothing_part2.jsonl")


def test_whole_and_float_ids_name_the_same_user(tmp_path):
    reviews = [J({**amazon_review("x", "A1", 5.0, T0), "user_id": 123}), J({**amazon_review("x", "A2", 4.0, T0 + 1), "user_id": 123.0})]
    tables = read_domain(_amazon(tmp_path, reviews), tmp_path)
    assert tables.interactions["user_id"].tolist() == ["123", "123"]


def test_boolean_ids_are_missing_fields(tmp_path):
    reviews = [J(amazon_review("u1", "A1", 5.0, T0)), J({**amazon_review("x", "A2", 4.0, T0 + 1), "user_id": True})]
    tables = read_domain(_amazon(tmp_path, reviews), tmp_path)
    assert tables.report.skipped["missing_field"] == 1


def test_no_valid_interaction_names_the_counts(tmp_path):
    with pytest.raises(DataError, match=r"no valid interaction .*skipped: .*rating_out_of_scale 1"):
        read_domain(_amazon(tmp_path, [J(amazon_review("u1", "A1", 9, T0))]), tmp_path)


# ---------------------------------------------------------------- 5. the registry
def _registry(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "domains.yaml"
    path.write_text("domains:\n  good:\n    format: amazon2023\n    path: /tmp\n" + body)
    return path


@pytest.mark.parametrize(
    "entry, message",
    [
        ("    path:\n", "has 'path: '"),
        ("    path: ''\n", "has 'path: '"),
        ("    wheel: x==1\n    member: a\n", "without 'sha256'"),
        ("    wheel: x==1\n    member: a\n    sha256: 0000000000000000000000000000000000000000000000000000000000000000\n", "sha256 0"),
        ("    path: /tmp\n    rating_scale: [5, 1]\n", "rating_scale"),
        ("    path: /tmp\n    on_corrupt_file: ignore\n", "on_corrupt_file"),
    ],
)
def test_a_broken_entry_is_a_problem_of_its_own_domain(tmp_path, entry, message):
    registry = load_registry(_registry(tmp_path, "  broken:\n    format: amazon2023\n" + entry))
    assert list(registry) == ["good"]
    assert registry.partition_keys() == ["good", "broken"]
    with pytest.raises(RegistryError, match=r"domains\.yaml:\d+: domain 'broken'") as info:
        registry.source("broken")
    assert message in str(info.value)


def test_relative_paths_resolve_against_the_registry_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    registry = load_registry(_registry(tmp_path, "  rel:\n    format: amazon2023\n    path: data/rel\n"))
    assert registry.source("rel").path == tmp_path / "data" / "rel"


def test_duplicate_domain_is_reported_not_dropped(tmp_path):
    path = _registry(tmp_path, "  good:\n    format: recbole\n    path: /srv\n")
    registry = load_registry(path)
    with pytest.raises(RegistryError, match=r"defined more than once \(lines 2, 5\)"):
        registry.source("good")


def test_duplicate_key_inside_an_entry_is_reported(tmp_path):
    registry = load_registry(_registry(tmp_path, "  twice:\n    format: recbole\n    path: /a\n    path: /b\n"))
    with pytest.raises(RegistryError, match=r"gives a key more than once: 'path' \(lines 7, 8\)"):
        registry.source("twice")


def test_yaml_error_names_the_file(tmp_path):
    path = tmp_path / "domains.yaml"
    path.write_text("domains:\n  good: [unclosed\n")
    with pytest.raises(RegistryError, match=r"(?s)domains\.yaml: not valid YAML.*domains\.yaml\", line 2"):
        load_registry(path)


def test_invalid_name_is_a_problem_not_a_partition(tmp_path):
    registry = load_registry(_registry(tmp_path, '  "bad\\n":\n    format: amazon2023\n    path: /tmp\n'))
    assert registry.partition_keys() == ["good"]
    assert "invalid domain name" in registry.problems["bad\n"]


def test_name_ending_in_newline_is_invalid():
    with pytest.raises(RegistryError):
        validate_domain_name("ml-1m\n")


# ---------------------------------------------------------------- 6. security
def test_local_pickle_needs_a_recorded_hash(tmp_path):
    registry = load_registry(_registry(tmp_path, f"  pk:\n    format: movielens_pickle\n    path: {tmp_path}\n"))
    with pytest.raises(RegistryError, match="a pickle can run code"):
        registry.source("pk")


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(_RunsCode.marker),))


def test_a_pickle_with_another_hash_is_never_unpickled(tmp_path):
    _RunsCode.marker = str(tmp_path / "pwned")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "movielens.pkl").write_bytes(pickle.dumps(_RunsCode()))
    source = DomainSource(name="pk", format="movielens_pickle", path=tmp_path / "data", sha256="0" * 64)
    with pytest.raises(DataError, match="refusing to unpickle"):
        read_domain(source, tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_a_recorded_pickle_is_read(tmp_path):
    frame = pd.DataFrame(
        {"userId": [1, 1], "movieId": [10, 11], "title": ["Heat", "Babe"], "rating": [4.0, 3.5],
         "timestamp": [978300760, 978300761], "year": [1995, 1995], "genres": ["Action", "Comedy"]}
    )
    (tmp_path / "movielens.pkl").write_bytes(pickle.dumps(frame))
    digest = hashlib.sha256((tmp_path / "movielens.pkl").read_bytes()).hexdigest()
    tables = read_domain(DomainSource(name="pk", format="movielens_pickle", path=tmp_path, sha256=digest), tmp_path)
    assert tables.items["title"].tolist() == ["Heat (1995)", "Babe (1995)"]


def test_a_wheel_without_hash_is_never_fetched(tmp_path):
    with pytest.raises(SourceError, match="no sha256 recorded"):
        fetch_wheel("recbole==1.2.1", tmp_path, None)
    assert not (tmp_path / "wheels").exists()


def test_a_wheel_appears_in_the_cache_only_once_its_download_is_complete(tmp_path, monkeypatch):
    """pip writes into a private folder and the finished wheel is renamed into the cache, so a process fetching the
    same wheel beside this one (a backfill's second run, a second test worker) never reads a partial file."""
    target = tmp_path / "wheels" / "demo-1.0"
    payload = b"PK\x03\x04 the whole wheel"
    seen_while_downloading = []

    def fake_pip(cmd, **kwargs):
        wheel = Path(cmd[cmd.index("-d") + 1]) / "demo-1.0-py3-none-any.whl"
        wheel.write_bytes(payload[:4])
        seen_while_downloading.extend(target.glob("*.whl"))
        wheel.write_bytes(payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(sources.subprocess, "run", fake_pip)
    wheel = fetch_wheel("demo==1.0", tmp_path, hashlib.sha256(payload).hexdigest())
    assert seen_while_downloading == []
    assert wheel == target / "demo-1.0-py3-none-any.whl" and wheel.read_bytes() == payload
    assert [p.name for p in target.iterdir()] == [wheel.name]  # the private folder is gone
