"""The domain registry: which data domains exist and where their raw files come from."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

FORMATS = ("recbole", "movielens_pickle", "amazon2023", "google_local")
# Domain names become partition keys, values of a SQL column and parts of file paths: keep them boring.
_DOMAIN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DEFAULT_REGISTRY = Path(__file__).resolve().parent.parent / "domains.yaml"


class RegistryError(ValueError):
    """The domain registry file is malformed."""


@dataclass(frozen=True)
class DomainSource:
    name: str
    format: str
    wheel: str | None = None
    sha256: str | None = None
    member: str | None = None
    path: Path | None = None


def validate_domain_name(name: str) -> str:
    if not isinstance(name, str) or not _DOMAIN_NAME.match(name):
        raise RegistryError(
            f"invalid domain name {name!r}: use 1-63 lowercase letters, digits, '-' or '_', starting alphanumeric"
        )
    return name


def registry_path() -> Path:
    return Path(os.environ.get("PROFILEKIT_DOMAINS", DEFAULT_REGISTRY))


def load_registry(path: Path | str | None = None) -> dict[str, DomainSource]:
    path = Path(path) if path is not None else registry_path()
    raw = yaml.safe_load(path.read_text()) or {}
    entries = raw.get("domains")
    if not isinstance(entries, dict) or not entries:
        raise RegistryError(f"{path}: expected a non-empty 'domains:' mapping")
    registry = {}
    for name, spec in entries.items():
        validate_domain_name(name)
        if not isinstance(spec, dict):
            raise RegistryError(f"{path}: domain {name!r} must be a mapping")
        fmt = spec.get("format")
        if fmt not in FORMATS:
            raise RegistryError(f"{path}: domain {name!r} has format {fmt!r}; expected one of {FORMATS}")
        has_wheel, has_path = "wheel" in spec, "path" in spec
        if has_wheel == has_path:
            raise RegistryError(f"{path}: domain {name!r} needs exactly one of 'wheel' or 'path'")
        if has_wheel and not spec.get("member"):
            raise RegistryError(f"{path}: domain {name!r} reads a wheel and needs 'member'")
        unknown = set(spec) - {"format", "wheel", "sha256", "member", "path"}
        if unknown:
            raise RegistryError(f"{path}: domain {name!r} has unknown keys {sorted(unknown)}")
        registry[name] = DomainSource(
            name=name,
            format=fmt,
            wheel=spec.get("wheel"),
            sha256=spec.get("sha256"),
            member=spec.get("member"),
            path=Path(spec["path"]).expanduser() if has_path else None,
        )
    return registry
