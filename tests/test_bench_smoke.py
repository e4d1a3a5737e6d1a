"""Smoke test of the benchmark tooling (bench/): the locust terminal scenario
for a few seconds at a low rate against servers `onshi bench load` starts on a
tiny generated store, and the locustfiles run by hand with a plain locust
command line against mTLS servers as scripts/run.sh starts them (and against a
dead port, which must fail the run). It checks that the tooling works end to
end (servers start, locust drives them through the gevent interceptor, exact
latencies are collected, answers come back), never how fast anything is.
Skipped when the bench extra (locust) is not installed."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
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


# --- plain locust, as its users run it, against the README's mTLS servers ------------------------

def _locust_env(**extra: str) -> dict:
    """No ONSHI_* settings but those given: what a person's shell has after
    `export ONSHI_PKI=...` (the queries come from the store itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONSHI_")}
    return {**env, **extra}


def _locust(tmp_path, locustfile: str, host: str, env: dict, users: int = 3, seconds: int = 4):
    import csv

    import common

    prefix = tmp_path / f"{Path(locustfile).stem}-{host.rsplit(':', 1)[-1]}"
    proc = subprocess.run([*common.locust_cmd(), "-f", locustfile, "--headless", "-u", str(users), "-r", str(users),
                           "-t", f"{seconds}s", "-H", host, "--csv", str(prefix), "--only-summary"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, check=False)
    stats = {}
    with contextlib.suppress(FileNotFoundError), open(f"{prefix}_stats.csv", newline="") as f:
        stats = {row["Name"]: (int(row["Request Count"]), int(row["Failure Count"])) for row in csv.DictReader(f)}
    return proc, stats


@pytest.fixture(scope="module")
def mtls_servers(tmp_path_factory):
    """`onshi serve` as scripts/run.sh starts it (mTLS, access log) and
    `onshi ingest-serve --pki` on a small generated store."""
    from tests.ingest_support import INGEST_ENV, Proc, onshi
    from tests.trust_helpers import pki_dir

    base = tmp_path_factory.mktemp("locust-mtls")
    store = base / "demo"
    subprocess.run([*_onshi(), "gen", "--persons", "1000", "--out", str(store)], check=True, capture_output=True,
                   timeout=120)
    serve = Proc(onshi("serve", "--data", str(store), "--port", "0", "--workers", "1", "--pki", pki_dir(),
                       "--audit-dir", str(base / "audit"), "--port-file", str(base / "serve.port")),
                 base / "serve.port", base / "serve.log", env=INGEST_ENV)  # one deployment: one switch
    try:
        ingest = Proc(onshi("ingest-serve", "--data", str(store), "--port", "0", "--pki", pki_dir(),
                            "--port-file", str(base / "ingest.port")),
                      base / "ingest.port", base / "ingest.log", env=INGEST_ENV)
    except Exception:
        serve.stop()
        raise
    yield serve, ingest, store, pki_dir()
    ingest.stop()
    serve.stop()


@pytest.mark.timeout(200)
def test_plain_locust_terminal_against_the_mtls_server(mtls_servers, tmp_path):
    """`locust -f bench/locust/terminal.py --headless ... -H HOST:PORT` with
    nothing but ONSHI_PKI and ONSHI_DATA set (run.sh's var/pki and var/demo are
    their defaults): checks answered over mTLS, exit 0."""
    serve, _, store, pki = mtls_servers
    proc, stats = _locust(tmp_path, "bench/locust/terminal.py", serve.target,
                          _locust_env(ONSHI_PKI=pki, ONSHI_DATA=str(store)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    requests, failures = stats["Aggregated"]
    assert requests > 0 and failures == 0, stats


@pytest.mark.timeout(200)
def test_plain_locust_mixed_against_the_mtls_servers(mtls_servers, tmp_path):
    """Every locustfile (mixed = terminal + review + insurer) over mTLS: each
    scenario's requests answered, none failed."""
    serve, ingest, store, pki = mtls_servers
    env = _locust_env(ONSHI_PKI=pki, ONSHI_DATA=str(store), ONSHI_BENCH_SECONDARY=ingest.target,
                      ONSHI_BENCH_CLAIM_BATCH="50", ONSHI_BENCH_UPDATE_BATCH="20")
    proc, stats = _locust(tmp_path, "bench/locust/mixed.py", serve.target, env, users=3, seconds=6)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("CheckByCard", "VerifyClaims batch", "StreamUpdates batch"):
        requests, failures = stats.get(name, (0, 0))
        assert requests > 0 and failures == 0, (name, stats)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("locustfile", ["terminal", "review", "insurer"])
def test_a_run_that_reaches_no_server_fails(mtls_servers, tmp_path, locustfile):
    """A dead port: no request answered, so the run exits non-zero (locust's
    own exit code would be 0: a user that never connects fails nothing)."""
    _, _, store, pki = mtls_servers
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    proc, stats = _locust(tmp_path, f"bench/locust/{locustfile}.py", dead,
                          _locust_env(ONSHI_PKI=pki, ONSHI_DATA=str(store)), seconds=3)
    assert proc.returncode != 0, proc.stderr[-3000:]
    requests, failures = stats.get("Aggregated", (0, 0))
    assert requests == failures, stats  # nothing answered


@pytest.mark.timeout(200)
def test_a_run_refused_by_the_server_fails(mtls_servers, tmp_path):
    """Plaintext against the mTLS server: every connection refused, exit non-zero."""
    serve, _, store, _ = mtls_servers
    proc, _ = _locust(tmp_path, "bench/locust/terminal.py", serve.target,
                      _locust_env(ONSHI_BENCH_INSECURE="1", ONSHI_DATA=str(store)), seconds=3)
    assert proc.returncode != 0, proc.stderr[-3000:]
