"""Writers of small raw files in the exact native schemas (Amazon Reviews 2023, Google Local, RecBole)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np


def _write_lines(path: Path, lines: list[str]) -> Path:
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def amazon_review(user: str, asin: str, rating, ts_ms: int) -> dict:
    return {
        "rating": rating,
        "title": "Nice",
        "text": "Fits well.",
        "images": [],
        "asin": asin,
        "parent_asin": asin,
        "user_id": user,
        "timestamp": ts_ms,
        "helpful_vote": 0,
        "verified_purchase": True,
    }


def amazon_meta(asin: str, title: str | None) -> dict:
    return {
        "main_category": "AMAZON FASHION",
        "title": title,
        "average_rating": 4.2,
        "rating_number": 12,
        "features": [],
        "description": [],
        "price": None,
        "images": [],
        "videos": [],
        "store": "Acme",
        "categories": ["Clothing", "Women"],
        "details": {},
        "parent_asin": asin,
        "bought_together": None,
    }


def google_review(user: str, gmap_id: str, rating, time_ms: int) -> dict:
    return {
        "user_id": user,
        "name": "Reviewer Name",
        "time": time_ms,
        "rating": rating,
        "text": "Great",
        "pics": None,
        "resp": None,
        "gmap_id": gmap_id,
    }


def google_meta(gmap_id: str, name: str) -> dict:
    return {
        "name": name,
        "address": f"{name}, 1 Main St, Honolulu, HI 96815",
        "gmap_id": gmap_id,
        "description": None,
        "latitude": 21.3,
        "longitude": -157.8,
        "category": ["Restaurant", "Cafe"],
        "avg_rating": 4.5,
        "num_of_reviews": 10,
        "price": "$$",
        "hours": None,
        "MISC": None,
        "state": "Open",
        "relative_results": [],
        "url": "https://example.invalid/place",
    }


def write_amazon_domain(directory: Path, n_users: int = 30, n_items: int = 200, events_per_user: int = 25,
                        seed: int = 0, gz: bool = True) -> Path:
    """A clean, evaluable Amazon-2023 domain: every user has enough events and enough unseen items."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = ["wool", "linen", "denim", "silk", "cotton", "leather", "canvas", "velvet"]
    kinds = ["scarf", "jacket", "boots", "dress", "hat", "belt", "shirt", "skirt"]
    metas = [json.dumps(amazon_meta(f"B{i:05d}", f"{words[i % 8]} {kinds[(i // 8) % 8]} no. {i}")) for i in range(n_items)]
    reviews = []
    for u in range(n_users):
        items = rng.choice(n_items, size=events_per_user, replace=False)
        for k, i in enumerate(items):
            ts = 1_600_000_000_000 + u * 10_000_000 + k * 60_000
            reviews.append(json.dumps(amazon_review(f"U{u:04d}", f"B{i:05d}", float(rng.integers(1, 6)), ts)))
    suffix = ".jsonl.gz" if gz else ".jsonl"
    _write_lines(directory / f"Clothing{suffix}", reviews)
    _write_lines(directory / f"meta_Clothing{suffix}", metas)
    return directory


def write_lines(path: Path, lines: list[str]) -> Path:
    return _write_lines(path, lines)
