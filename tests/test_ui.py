"""The Dagster UI as a person sees it: the webserver on 127.0.0.1, the asset graph in headless Chromium."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from orchestration.definitions import defs
from tests.conftest import ROOT

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--hide-scrollbars", "--window-size=1800,1100",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    port = _free_port()
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    cmd = [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("dagster-webserver did not answer within 180 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _chromium(*args: str) -> subprocess.CompletedProcess:
    profile = ARTIFACTS / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180
    )


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test installs it)")
def test_catalog_and_lineage_show_every_asset_and_group(webserver):
    ARTIFACTS.mkdir(exist_ok=True)
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    groups = {graph.get(k).group_name for k in keys}
    pages = {"asset_catalog": f"{webserver}/assets", "asset_lineage": f"{webserver}/asset-groups"}
    dom = {}
    for name, url in pages.items():
        out = _chromium("--virtual-time-budget=30000", "--dump-dom", url)
        assert out.returncode == 0, out.stderr[-2000:]
        dom[name] = out.stdout
        shot = ARTIFACTS / f"{name}.png"
        done = _chromium("--virtual-time-budget=30000", f"--screenshot={shot}", url)
        assert done.returncode == 0 and shot.stat().st_size > 10_000
    missing = [k.to_user_string() for k in keys if k.to_user_string() not in dom["asset_catalog"]]
    assert not missing, f"assets missing from the catalog page: {missing}"
    assert all(f">{g}<" in dom["asset_lineage"] for g in groups), groups
