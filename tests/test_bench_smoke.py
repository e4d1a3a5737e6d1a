"""Smoke test of the benchmark tooling (bench/): the locust terminal scenario
for a few seconds at a low rate against servers `onshi bench load` starts on a
tiny generated store. It checks that the tooling works end to end (servers
start, locust drives them through the gevent interceptor, exact latencies are
collected, answers come back), never how fast anything is. Skipped when the
bench extra (locust) is not installed."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

sys.path.insert(0, str(BENCH))

pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                reason="locust not installed (ONSHI_EXTRAS=test,bench scripts/setup.sh)")


def _onshi() -> list[str]:
    exe = Path(sys.executable).with_name("onshi")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "onshi.cli"]


@pytest.mark.timeout(60)
def test_terminal_scenario_runs_against_servers_it_starts(tmp_path):
    store = tmp_path / "store"
    subprocess.run([*_onshi(), "gen", "--persons", "2000", "--out", str(store)], check=True,
                   capture_output=True, timeout=60)
    results = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [*_onshi(), "bench", "load", "terminal", "--data", str(store), "--rate", "40", "--duration", "5",
         "--workers", "1", "--terminals", "4", "--no-record", "--out", str(tmp_path / "load")],
        capture_output=True, text=True, timeout=90, cwd=ROOT, check=False,
        env={**os.environ, "ONSHI_BENCH_RESULTS": str(results)})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    timed = re.search(r"\((\d+) timed checks\)", out)
    assert timed and int(timed.group(1)) > 20, out  # ~40/s over a 3 s steady window
    assert "failures 0" in out, out
    assert "card=VALID" in out, out  # sampled serials exist in the store
    assert not re.search(r"unknown (card|number)=(?!NO_RECORD)", out), out  # unknowns answer NO_RECORD
    assert re.search(r"p99 \d+\.\d\d", out), out
    csvs = list((tmp_path / "load").glob("*/locust_stats.csv"))
    assert csvs, "locust wrote no CSV"
    assert not results.exists()  # --no-record


def test_results_rows_go_under_their_own_section(tmp_path, monkeypatch):
    import common

    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Engine (issue 2)\n\n| a |\n|---|\n| 1 |\n")
    monkeypatch.setattr(common, "RESULTS", results)
    common.append_results("Load (issue 7)", "intro text", ["x", "y"], ["1", "2"])
    common.append_results("Load (issue 7)", "intro text", ["x", "y"], ["3", "4|5"])
    common.append_note("Load (issue 7)", "a note")
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\n## Engine (issue 2)\n\n| a |\n|---|\n| 1 |\n")
    load = text.split("## Load (issue 7)", 1)[1]
    assert load.count("intro text") == 1
    assert "| x | y |\n|---|---|\n| 1 | 2 |\n| 3 | 4\\|5 |\n" in load
    assert load.rstrip().endswith("a note")


def test_results_rows_join_their_table_not_a_notes_table(tmp_path, monkeypatch):
    """A note with a table of its own after the section's table: new rows
    still go under the table with their header."""
    import common

    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Trust\n\nintro\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n"
                       "Reading:\n\n| run | share |\n|---|---|\n| a | 9 |\n\n## Next\n\n| z |\n|---|\n| 0 |\n")
    monkeypatch.setattr(common, "RESULTS", results)
    common.append_results("Trust", "intro", ["x", "y"], ["3", "4"])
    text = results.read_text()
    assert "| x | y |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\nReading:" in text
    assert "| run | share |\n|---|---|\n| a | 9 |\n\n## Next" in text
