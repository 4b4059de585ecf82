import pytest

from profilekit.domains import RegistryError, load_registry, validate_domain_name

pytestmark = pytest.mark.fast  # `make test-fast`: no Dagster run, subprocess, browser or real model


def test_default_registry_names_the_three_movielens_domains():
    from tests.conftest import ROOT

    registry = load_registry(ROOT / "domains.yaml")
    assert {"ml-1m", "ml-100k", "ml-latest-small"} <= set(registry)
    assert all(s.wheel and s.sha256 and len(s.sha256) == 64 for s in registry.values())


@pytest.mark.parametrize("bad", ["", "ML-1M", "a b", "x;drop table", "../etc", "-lead", "a" * 64, "ml.1m"])
def test_invalid_domain_names_are_rejected(bad):
    with pytest.raises(RegistryError):
        validate_domain_name(bad)


def test_registry_rejects_bad_entries(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("domains:\n  ok-name:\n    format: recbole\n    wheel: x==1\n    path: /tmp\n    member: a\n")
    with pytest.raises(RegistryError, match="exactly one"):
        load_registry(path).source("ok-name")
    path.write_text("domains:\n  Bad Name:\n    format: recbole\n    path: /tmp\n")
    with pytest.raises(RegistryError, match="invalid domain name"):
        load_registry(path).source("Bad Name")
    path.write_text("domains:\n  fine:\n    format: csv\n    path: /tmp\n")
    with pytest.raises(RegistryError, match="format"):
        load_registry(path).source("fine")
