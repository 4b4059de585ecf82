"""Partition writes of the DuckDB warehouse are atomic: a writer killed between deleting a partition's old rows
and inserting its new ones leaves the old rows."""

import signal
import subprocess
import sys
import time

import duckdb

from tests.conftest import ROOT


def _writer(database, domain: str, rows: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-W", "ignore", "-m", "tests.processes.partition_writer", str(database), domain, str(rows), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _rows(database) -> dict[str, int]:
    with duckdb.connect(str(database), read_only=True) as con:
        return dict(con.execute("SELECT domain, count(*) FROM profiles.events GROUP BY domain").fetchall())


def test_a_writer_killed_mid_rewrite_leaves_the_old_rows(tmp_path):
    database = tmp_path / "warehouse.duckdb"
    for domain, rows in (("a", 100), ("b", 7)):
        proc = _writer(database, domain, rows)
        assert proc.wait(timeout=120) == 0, proc.stdout.read()
    assert _rows(database) == {"a": 100, "b": 7}

    marker = tmp_path / "paused"
    proc = _writer(database, "a", 5, "--pause-before-insert", str(marker))
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the writer never reached the insert"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _rows(database) == {"a": 100, "b": 7}

    proc = _writer(database, "a", 5)  # the next rewrite replaces the partition as usual
    assert proc.wait(timeout=120) == 0, proc.stdout.read()
    assert _rows(database) == {"a": 5, "b": 7}
