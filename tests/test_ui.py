"""The Dagster UI as a person sees it: the webserver on 127.0.0.1, the asset graph in headless Chromium."""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

from orchestration.definitions import defs
from tests.conftest import ROOT
from tests.tiny_llm import tiny_run_resources

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--hide-scrollbars", "--window-size=1800,1100",
]


DOMAIN = "amazon-fixture"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory, tiny_chat_dir):
    port = _free_port()
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # A real materialization of the fixture domain's chain, so metric pages have tables and charts to show; the
    # tiny models, as what the pages show does not depend on them (the real ones run in test_real_data).
    tiny = tiny_run_resources(tiny_chat_dir)
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert defs.resolve_job_def("default_graph").execute_in_process(
            partition_key=DOMAIN, instance=instance, run_config={"resources": tiny}).success
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
        # The catalog renders only the rows in view: a window tall enough for every asset (the last switch wins).
        out = _chromium("--virtual-time-budget=30000", "--window-size=1800,3000", "--dump-dom", url)
        assert out.returncode == 0, out.stderr[-2000:]
        dom[name] = out.stdout
        shot = ARTIFACTS / f"{name}.png"
        done = _chromium("--virtual-time-budget=30000", f"--screenshot={shot}", url)
        assert done.returncode == 0 and shot.stat().st_size > 10_000
    missing = [k.to_user_string() for k in keys if k.to_user_string() not in dom["asset_catalog"]]
    assert not missing, f"assets missing from the catalog page: {missing}"
    assert all(f">{g}<" in dom["asset_lineage"] for g in groups), groups


class _Browser:
    """Headless Chromium driven over the DevTools protocol: a page can be clicked, not only dumped."""

    def __init__(self):
        import websocket

        port = _free_port()
        profile = ARTIFACTS / "chromium-devtools-profile"
        shutil.rmtree(profile, ignore_errors=True)
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "--remote-allow-origins=*",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    page = next(p for p in json.load(r) if p["type"] == "page")
                break
            except (OSError, StopIteration):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
        self.calls = 0

    def call(self, method: str, **params) -> dict:
        self.calls += 1
        self.ws.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.calls:
                assert "error" not in message, message
                return message["result"]

    def js(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {expression}")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.ws.close()
        self.proc.kill()
        self.proc.wait(timeout=30)


# The metadata row whose key cell is `key`: its value cell (Dagster folds long markdown behind a link, and shows
# table metadata inline).
_ROW = "Array.from(document.querySelectorAll('tr')).find(r => r.cells.length && r.cells[0].innerText.trim() === '{key}')"
_PNGS = "Array.from(document.querySelectorAll('img')).filter(i => i.src.startsWith('data:image/png'))"


def _open_asset(browser: _Browser, webserver: str, asset: str, key: str) -> None:
    browser.call("Page.navigate", url=f"{webserver}/assets/{asset}")
    browser.wait_for(f"!!{_ROW.format(key=key)}")
    time.sleep(2)  # a first visit may pop up Dagster's newsletter dialog over the page: dismiss it
    browser.js("Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'Skip')?.click()")


def _inline_table(browser: _Browser, key: str) -> tuple[list[str], list[str]]:
    """Header and cells of the table rendered in the metadata row `key`, without clicking anything."""
    return tuple(browser.wait_for(
        f"(() => {{ const t = {_ROW.format(key=key)}?.querySelector('table'); if (!t) return null; "
        "const text = s => Array.from(t.querySelectorAll(s)).map(x => x.innerText.trim()); "
        "return text('th').length && [text('th'), text('td')]; })()"
    ))


def _markdown_images(browser: _Browser, key: str, screenshot: Path) -> list:
    """Open the markdown of metadata row `key` and return [alt, width, height] of each PNG once decoded."""
    browser.js(f"{_ROW.format(key=key)}.querySelector('a').click()")
    sizes = browser.wait_for(f"(() => {{ const i = {_PNGS}; return i.length && i.every(x => x.complete) && "
                             f"i.map(x => [x.alt, x.naturalWidth, x.naturalHeight]); }})()")
    time.sleep(1)  # let the dialog finish fading in
    browser.screenshot(screenshot)
    browser.js("Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'Close').click()")
    browser.wait_for(f"!{_PNGS}.length")
    return sizes


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test installs it)")
def test_metric_asset_shows_its_table_inline_and_renders_its_chart(webserver):
    ARTIFACTS.mkdir(exist_ok=True)
    browser = _Browser()
    try:
        browser.call("Page.enable")
        _open_asset(browser, webserver, "rec_metrics", "summary")
        header, cells = _inline_table(browser, "summary")
        assert {"method", "context", "ndcg10", "recall10", "t_pvalue_vs_ref"} <= set(header)  # rendered, unfolded
        assert {"Base", "history", "10H+P", "All-H"} <= set(cells)
        browser.screenshot(ARTIFACTS / "rec_metrics_table.png")
        sizes = _markdown_images(browser, "chart", ARTIFACTS / "rec_metrics_chart.png")
        for asset, columns in (("qa_metrics", {"mc_accuracy", "rating_mae", "t_pvalue_vs_ref", "t_pvalue_vs_base"}),
                               ("rating_metrics", {"rating_mae", "rating_macro_f1", "vs_method", "t_pvalue_vs_ref"})):
            _open_asset(browser, webserver, asset, "summary")
            header, cells = _inline_table(browser, "summary")
            assert columns <= set(header), (asset, header)
            assert {"Base", "10H+P"} <= set(cells), (asset, cells)
            if asset == "rating_metrics":  # the rows against each reference, not only those against Base
                assert "blue" in cells, cells
            browser.screenshot(ARTIFACTS / f"{asset}_table.png")
    finally:
        browser.close()
    assert sizes == [["NDCG@10", 700, 320]]  # the bar chart decoded at its full size (7 x 3.2 in at 100 dpi)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test installs it)")
def test_analyses_show_their_plots_and_tables(webserver):
    """The t-SNE map and the frontier decode at full size; their tables and Table 6's render inline."""
    ARTIFACTS.mkdir(exist_ok=True)
    browser = _Browser()
    try:
        browser.call("Page.enable")
        _open_asset(browser, webserver, "user_embedding_tsne", "plot")
        header, cells = _inline_table(browser, "by_method")
        assert header == ["method", "context", "points", "x_mean", "y_mean"]
        assert {"history", "All-H", "10-H", "Base", "10H+P"} <= set(cells)
        assert _inline_table(browser, "users_by_genre")[0] == ["dominant_genre", "users"]
        tsne = _markdown_images(browser, "plot", ARTIFACTS / "user_embedding_tsne.png")

        _open_asset(browser, webserver, "efficiency_frontier", "summary")
        header, cells = _inline_table(browser, "summary")
        assert {"method", "context", "ndcg10", "generation_seconds", "embedding_seconds", "seconds_per_user",
                "on_frontier"} <= set(header)
        assert {"history", "Base", "10H+P", "10-H", "true"} <= set(cells)
        frontier = _markdown_images(browser, "plot", ARTIFACTS / "efficiency_frontier.png")

        _open_asset(browser, webserver, "ablation_metrics", "summary")
        header, _ = _inline_table(browser, "summary")  # no BLUE trained in this instance: the header alone
        assert {"reference", "method", "context", "ndcg10", "delta_ndcg10", "ndcg10_t_pvalue", "mc_accuracy"} <= set(header)
    finally:
        browser.close()
    assert tsne == [["t-SNE of user embeddings", 1200, 500]] and frontier == [["efficiency frontier", 700, 400]]
