"""The domain registry: which data domains exist and where their raw files come from.

A broken entry never takes the other domains down: `load_registry` keeps every valid entry and records each
broken one as a problem (a message naming the registry file, its line and the domain). A broken entry whose name
is a valid partition key still becomes a partition, so materializing it fails with that message instead of the
domain vanishing. Only a registry that cannot be parsed at all is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

FORMATS = ("recbole", "movielens_pickle", "amazon2023", "google_local")
# What a reader does with a compressed file that ends in damage: fail naming the file and its last good line,
# or keep the lines read before the damage and count the file as truncated.
ON_CORRUPT_FILE = ("fail", "keep_read_lines")
# Rating scales of the native formats; an entry's `rating_scale: [lo, hi]` overrides its format's.
DEFAULT_RATING_SCALE = {
    "recbole": (0.5, 5.0),
    "movielens_pickle": (0.5, 5.0),
    "amazon2023": (1.0, 5.0),
    "google_local": (1.0, 5.0),
}
# Domain names become partition keys, values of a SQL column and parts of file paths: keep them boring.
_DOMAIN_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEYS = {"format", "wheel", "sha256", "member", "path", "rating_scale", "on_corrupt_file"}


class RegistryError(ValueError):
    """The domain registry file, or one of its entries, is malformed."""


@dataclass(frozen=True)
class DomainSource:
    name: str
    format: str
    wheel: str | None = None
    sha256: str | None = None
    member: str | None = None
    path: Path | None = None
    rating_scale: tuple[float, float] = (0.5, 5.0)
    on_corrupt_file: str = "fail"


@dataclass(frozen=True)
class Registry(Mapping[str, DomainSource]):
    """The valid entries (a mapping name -> source) and the broken ones (`problems`: name -> message)."""

    path: Path
    sources: dict[str, DomainSource]
    problems: dict[str, str] = field(default_factory=dict)
    names: tuple = ()  # every entry's name, in file order

    def __getitem__(self, name: str) -> DomainSource:
        return self.source(name)

    def __iter__(self):
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __contains__(self, name: object) -> bool:
        return name in self.sources

    def source(self, name: str) -> DomainSource:
        """The entry of `name`, or a RegistryError saying why it is unusable."""
        if name in self.problems:
            raise RegistryError(self.problems[name])
        if name not in self.sources:
            raise RegistryError(f"{self.path}: no domain {name!r} (registered: {sorted(self.sources)})")
        return self.sources[name]

    def partition_keys(self) -> list[str]:
        """Every entry whose name can be a partition key, broken ones included (in file order)."""
        return [name for name in self.names if _valid_name(name)]


def _valid_name(name: object) -> bool:
    return isinstance(name, str) and _DOMAIN_NAME.fullmatch(name) is not None


def validate_domain_name(name: object) -> str:
    if not _valid_name(name):
        raise RegistryError(
            f"invalid domain name {name!r}: use 1-63 lowercase letters, digits, '-' or '_', starting alphanumeric"
        )
    return name


class _LineLoader(yaml.SafeLoader):
    """safe_load that remembers each domain's line and refuses nothing silently: a key given twice in one
    mapping is reported (plain safe_load keeps the last one)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    duplicates: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                duplicates.setdefault(key, [seen[key]]).append(key_node.start_mark.line + 1)
            else:
                seen[key] = key_node.start_mark.line + 1
        except TypeError:  # an unhashable key: let the base class report it
            pass
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=deep)
    mapping["__lines__"] = seen
    mapping["__duplicates__"] = duplicates
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_bookkeeping(value):
    if isinstance(value, dict):
        return {k: _strip_bookkeeping(v) for k, v in value.items() if k not in ("__lines__", "__duplicates__")}
    if isinstance(value, list):
        return [_strip_bookkeeping(v) for v in value]
    return value


def _entry_problem(spec: object, base_dir: Path) -> tuple[str | None, dict]:
    """Why an entry is unusable (None when it is fine) and its normalised fields."""
    if not isinstance(spec, dict):
        return "must be a mapping of format, wheel/path, ...", {}
    if spec.get("__duplicates__"):
        keys = ", ".join(f"{k!r} (lines {', '.join(map(str, ls))})" for k, ls in spec["__duplicates__"].items())
        return f"gives a key more than once: {keys}", {}
    spec = _strip_bookkeeping(spec)
    unknown = set(spec) - _KEYS
    if unknown:
        return f"has unknown keys {sorted(map(str, unknown))}; allowed: {sorted(_KEYS)}", {}
    fmt = spec.get("format")
    if fmt not in FORMATS:
        return f"has format {fmt!r}; expected one of {FORMATS}", {}
    has_wheel, has_path = "wheel" in spec, "path" in spec
    if has_wheel == has_path:
        return "needs exactly one of 'wheel' or 'path'", {}
    fields: dict = {"format": fmt}
    if has_wheel:
        if not isinstance(spec["wheel"], str) or "==" not in spec["wheel"]:
            return f"has wheel {spec['wheel']!r}; expected 'name==version'", {}
        if not spec.get("member") or not isinstance(spec["member"], str):
            return "reads a wheel and needs 'member'", {}
        fields.update(wheel=spec["wheel"], member=spec["member"])
    else:
        raw_path = spec["path"]
        if raw_path is None or not isinstance(raw_path, str) or not raw_path.strip():
            return f"has 'path: {'' if raw_path is None else raw_path!r}': give the directory of the domain's files", {}
        path = Path(raw_path).expanduser()
        fields["path"] = path if path.is_absolute() else (base_dir / path).resolve()
    sha = spec.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        return f"has sha256 {sha!r}; expected 64 lowercase hex digits in quotes", {}
    # Unverified downloads, and pickles that could run code, are read only against a recorded hash.
    if has_wheel and sha is None:
        return "reads a wheel without 'sha256': record the wheel's sha256 (64 hex digits, quoted)", {}
    if fmt == "movielens_pickle" and has_path and sha is None:
        return "reads a pickle from a local path: record the file's sha256 (a pickle can run code when read)", {}
    fields["sha256"] = sha
    scale = spec.get("rating_scale", DEFAULT_RATING_SCALE[fmt])
    if (
        not isinstance(scale, (list, tuple)) or len(scale) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale) or scale[0] >= scale[1]
    ):
        return f"has rating_scale {scale!r}; expected [lowest, highest]", {}
    fields["rating_scale"] = (float(scale[0]), float(scale[1]))
    on_corrupt = spec.get("on_corrupt_file", "fail")
    if on_corrupt not in ON_CORRUPT_FILE:
        return f"has on_corrupt_file {on_corrupt!r}; expected one of {ON_CORRUPT_FILE}", {}
    fields["on_corrupt_file"] = on_corrupt
    return None, fields


def load_registry(path: Path | str) -> Registry:
    """Parse the registry. Raises RegistryError (naming the file, and the line where YAML says) only when the file
    as a whole is unusable; a broken entry is recorded in `problems` and the others stay usable."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:  # a stream, so YAML's messages name the file
            raw = yaml.load(fh, Loader=_LineLoader) or {}
    except OSError as exc:
        raise RegistryError(f"domain registry {path}: cannot be read ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise RegistryError(f"domain registry {path}: not valid YAML: {exc}") from exc
    entries = raw.get("domains") if isinstance(raw, dict) else None
    if not isinstance(entries, dict) or not _strip_bookkeeping(entries):
        raise RegistryError(f"domain registry {path}: expected a non-empty 'domains:' mapping")
    lines, duplicates = entries.get("__lines__", {}), entries.get("__duplicates__", {})
    sources, problems = {}, {}
    for name, spec in _strip_bookkeeping(entries).items():
        where = f"{path}:{lines.get(name, '?')}: domain {name!r}"
        if not _valid_name(name):
            problems[name] = (
                f"{where}: invalid domain name: use 1-63 lowercase letters, digits, '-' or '_', starting alphanumeric"
            )
            continue
        if name in duplicates:
            problems[name] = f"{where}: defined more than once (lines {', '.join(map(str, duplicates[name]))})"
            continue
        problem, fields = _entry_problem(entries[name], path.parent)
        if problem:
            problems[name] = f"{where} {problem}"
        else:
            sources[name] = DomainSource(name=name, **fields)
    return Registry(path=path, sources=sources, problems=problems, names=tuple(_strip_bookkeeping(entries)))
