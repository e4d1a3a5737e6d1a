"""Smoke test of the benchmark tooling (bench/): the locust terminal scenario
for a few seconds at a low rate against servers `onshi bench load` starts on a
tiny generated store, the locustfiles run by hand with a plain locust command
line against mTLS servers as scripts/run.sh starts them (and against a dead
port, which must fail the run), the trust bench in each of its modes, every
other benchmark through `onshi bench NAME` at small sizes, and the writers of
bench/RESULTS.md and docs/INVESTIGATIONS.md. It checks that the
tooling works end to end (servers start, locust drives them through the gevent
interceptor, exact latencies are collected, answers come back, figures land in
their area), never how fast anything is. Skipped when the bench extra (locust)
is not installed."""

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

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust not installed (ONSHI_EXTRAS=test,bench scripts/setup.sh)"
)


def _onshi() -> list[str]:
    exe = Path(sys.executable).with_name("onshi")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "onshi.cli"]


@pytest.mark.timeout(60)
def test_terminal_scenario_runs_against_servers_it_starts(tmp_path):
    store = tmp_path / "store"
    subprocess.run(
        [*_onshi(), "gen", "--persons", "2000", "--out", str(store)], check=True, capture_output=True, timeout=60
    )
    results = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [
            *_onshi(),
            "bench",
            "load",
            "terminal",
            "--data",
            str(store),
            "--rate",
            "40",
            "--duration",
            "5",
            "--workers",
            "1",
            "--terminals",
            "4",
            "--out",
            str(tmp_path / "load"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        check=False,
        env={**os.environ, "ONSHI_BENCH_RESULTS": str(results), "ONSHI_BENCH_LOG": str(tmp_path / "log.md")},
    )
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
    assert not results.exists()  # without --record nothing is written


def _run(when: str):
    import common

    return common.Run(command="python bench/x.py --a", when=f"{when} UTC", load=1.25)


def test_a_figure_replaces_its_row_in_its_area_only(tmp_path, monkeypatch):
    """A recorded figure replaces the row of the same figure in its area's
    table (the current figures); a new figure joins the table; another area,
    and a note's own table below, are left as they were."""
    import common

    results = tmp_path / "RESULTS.md"
    head = "| " + " | ".join(common.FIGURE_HEADER) + " |\n|---|---|---|---|---|\n"
    results.write_text(
        "# Benchmark results\n\nintro\n\n## Engine\n\nwhat\n\n"
        + head
        + "| card checks/s | 1 | ≥ 2: **not met** | `old` | 2026-11-21 13:21 · 0.5 |\n"
        + "| pure | 3 | — | `old` | 2026-11-21 13:21 · 0.5 |\n\nReading:\n\n| run | x |\n|---|---|\n"
        + "| a | 9 |\n\n## Trust\n\n"
        + head
        + "| share | 30% | ≤ 30 % | `t` | 2026-12-03 12:00 · 3.8 |\n"
    )
    monkeypatch.setattr(common, "RESULTS", results)
    common.put_figures("Engine", [("card checks/s", "2", "≥ 2: met"), ("a|b", "4", "—")], _run("2026-12-04 10:00"))
    common.put_figures("Server", [("cpu", "5 µs", "—")], _run("2026-12-04 10:01"))
    text = results.read_text()
    engine = text.split("## Engine", 1)[1].split("## Trust", 1)[0]
    assert engine.count("| card checks/s |") == 1
    assert (
        "| card checks/s | 2 | ≥ 2: met | `python bench/x.py --a` | 2026-12-04 10:00 · 1.2 |\n"
        "| pure | 3 | — | `old` | 2026-11-21 13:21 · 0.5 |\n"
        "| a\\|b | 4 | — | `python bench/x.py --a` | 2026-12-04 10:00 · 1.2 |\n\nReading:"
    ) in engine
    assert "| run | x |\n|---|---|\n| a | 9 |\n" in engine
    assert "| share | 30% | ≤ 30 % | `t` | 2026-12-03 12:00 · 3.8 |" in text.split("## Trust", 1)[1]
    assert text.rstrip().endswith(
        "## Server\n\n" + head + "| cpu | 5 µs | — | `python bench/x.py --a` | 2026-12-04 10:01 · 1.2 |"
    )


def test_a_run_is_logged_at_the_end_of_its_area(tmp_path, monkeypatch):
    import common

    log = tmp_path / "INVESTIGATIONS.md"
    log.write_text("# Investigations\n\n## Engine\n\n### 2026-11-21 — old\n\ntext\n\n## Trust\n\n### t\n")
    monkeypatch.setattr(common, "LOG", log)
    common.log_entry("Engine", "| x |\n|---|\n| 1 |", _run("2026-12-04 10:00"))
    common.log_entry("Fuzz", "body", _run("2026-12-04 10:05"))
    text = log.read_text()
    engine = text.split("## Engine", 1)[1].split("## Trust", 1)[0]
    assert engine.index("### 2026-11-21 — old") < engine.index("### 2026-12-04 10:00 UTC — `python bench/x.py --a`")
    assert engine.endswith("load average 1.2.\n\n| x |\n|---|\n| 1 |\n\n")
    assert text.endswith(
        "## Fuzz\n\n### 2026-12-04 10:05 UTC — `python bench/x.py --a`\n\n"
        f"{common.machine()}, load average 1.2.\n\nbody\n"
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "mode",
    [
        ["--in-process", "--checks", "200", "--threads", "4"],
        ["--rounds", "1", "--checks", "100", "--rate", "200", "--threads", "2"],
        [
            "--sequential",
            "--rounds",
            "1",
            "--checks",
            "100",
            "--threads",
            "2",
            "--configs",
            "mtls-proof-log,mtls-proof-nosync",
        ],
    ],
    ids=["in-process", "paired", "sequential"],
)
def test_trust_bench_records_its_figures(tmp_path, mode):
    """bench/trust.py in each mode: servers start, checks are answered, the
    access log verifies, and --record puts its figures in the Trust area."""
    results, log = tmp_path / "RESULTS.md", tmp_path / "log.md"
    proc = subprocess.run(
        [sys.executable, "bench/trust.py", *mode, "--record"],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
        check=False,
        env={
            **os.environ,
            "ONSHI_BENCH_RESULTS": str(results),
            "ONSHI_BENCH_LOG": str(log),
            "ONSHI_BENCH_DATA": str(tmp_path / "data"),
        },
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Errors 0" in out or "--in-process" in mode, out
    if "--in-process" not in mode:
        assert "access log verify ok=True" in out, out
    table = results.read_text().split("## Trust", 1)[1]
    assert "share of server CPU per check, whole trust layer" in table or "AuditLog.append" in table, table
    assert "## Trust\n\n### " in log.read_text()


# --- every benchmark through `onshi bench NAME`, at small sizes ------------------------------------

# name -> (small arguments, the RESULTS.md area its --record writes; None: it prints only).
# trust and load have tests of their own above.
SMALL = {
    "engine": (["--persons", "2000", "--sample", "1000", "--repeats", "1"], "Engine"),
    "scale": (["--sizes", "2000,3000", "--queries", "1000", "--seconds", "0.2", "--rounds", "1"], "Scale"),
    "peers": (["--persons", "2000", "--queries", "1000", "--seconds", "0.2", "--rounds", "1"], "Peers"),
    "server": (["--persons", "2000", "--seconds", "0.5", "--warmup", "0.2", "--rounds", "1"], "Server"),
    "cost": (["--persons", "2000", "--seconds", "1", "--rounds", "1"], "Cost"),
    "claims": (["--persons", "2000", "--claims", "2000", "--batch", "500"], "Claims"),
    "ingest": (
        ["--residents", "1000", "--updates", "3000", "--streams", "3", "--batch", "1,500", "--writer-only"],
        "Ingest",
    ),
    "registry": (["--residents", "1000"], "Registry"),
    "fuzz": (["--examples", "400", "--plaintext"], "Fuzz"),
    "terminal_card": (["--rounds", "2"], None),
    "ab_build": (["--persons", "2000", "--pairs", "1", "--rounds", "1"], None),
    "plot": ([], None),
}
SLOW = {"cost", "engine"}  # over 20 s at small sizes: cost paces its load; engine builds its variants once


def _param(name: str):
    return pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [])


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory):
    """One scratch bench/out for the module: the small stores are generated once."""
    return tmp_path_factory.mktemp("bench-out")


def test_every_benchmark_has_a_smoke_run():
    from onshi.commands import bench as bench_cli

    assert set(SMALL) | {"trust", "load"} == set(bench_cli.BENCHMARKS)
    scripts = {p.stem for p in BENCH.glob("*.py")} - {
        "common",
        "empty_server",
        "seams",
        "variants",
    }  # helpers, not benches
    assert scripts == set(bench_cli.BENCHMARKS)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", [_param(n) for n in sorted(SMALL)])
def test_a_benchmark_runs_at_small_sizes(name, tmp_path, bench_out):
    """`onshi bench NAME` at small sizes runs to its end: exit 0, or 1 where a
    target is missed at these sizes (how fast is not this test's business),
    never a traceback; with --record its figures land in its RESULTS.md area
    and the run in the log, in scratch files."""
    args, area = SMALL[name]
    results, log, data = tmp_path / "RESULTS.md", tmp_path / "log.md", tmp_path / "data"
    if name == "ab_build":
        args = [*args, "--other", str(tmp_path / "other")]  # no other build: the checkout's own, twice
    if name == "plot":
        args = ["--out", str(tmp_path)]
    env = {
        **os.environ,
        "ONSHI_BENCH_RESULTS": str(results),
        "ONSHI_BENCH_LOG": str(log),
        "ONSHI_BENCH_DATA": str(data if area else BENCH / "data"),
        "ONSHI_BENCH_OUT": str(bench_out),
    }
    proc = subprocess.run(
        [*_onshi(), "bench", name, *args, *(["--record"] if area else [])],
        capture_output=True,
        text=True,
        timeout=380,
        cwd=ROOT,
        env=env,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1) and "Traceback" not in out, out[-4000:]
    if area is None:
        assert proc.returncode == 0, out[-4000:]
        if name == "plot":
            assert sorted(p.name for p in tmp_path.glob("*.png")), out
        return
    table = results.read_text().split(f"## {area}\n", 1)[1].split("\n## ", 1)[0]
    assert f"| `onshi bench {name} " in table, table
    assert f"## {area}\n\n### " in log.read_text()


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
    proc = subprocess.run(
        [
            *common.locust_cmd(),
            "-f",
            locustfile,
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "-H",
            host,
            "--csv",
            str(prefix),
            "--only-summary",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
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
    subprocess.run(
        [*_onshi(), "gen", "--persons", "1000", "--out", str(store)], check=True, capture_output=True, timeout=120
    )
    serve = Proc(
        onshi(
            "serve",
            "--data",
            str(store),
            "--port",
            "0",
            "--workers",
            "1",
            "--pki",
            pki_dir(),
            "--audit-dir",
            str(base / "audit"),
            "--port-file",
            str(base / "serve.port"),
        ),
        base / "serve.port",
        base / "serve.log",
        env=INGEST_ENV,
    )  # one deployment: one switch
    try:
        ingest = Proc(
            onshi(
                "ingest-serve",
                "--data",
                str(store),
                "--port",
                "0",
                "--pki",
                pki_dir(),
                "--port-file",
                str(base / "ingest.port"),
            ),
            base / "ingest.port",
            base / "ingest.log",
            env=INGEST_ENV,
        )
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
    proc, stats = _locust(
        tmp_path, "bench/locust/terminal.py", serve.target, _locust_env(ONSHI_PKI=pki, ONSHI_DATA=str(store))
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    requests, failures = stats["Aggregated"]
    assert requests > 0 and failures == 0, stats


@pytest.mark.timeout(200)
def test_plain_locust_mixed_against_the_mtls_servers(mtls_servers, tmp_path):
    """Every locustfile (mixed = terminal + review + insurer) over mTLS: each
    scenario's requests answered, none failed."""
    serve, ingest, store, pki = mtls_servers
    env = _locust_env(
        ONSHI_PKI=pki,
        ONSHI_DATA=str(store),
        ONSHI_BENCH_SECONDARY=ingest.target,
        ONSHI_BENCH_CLAIM_BATCH="50",
        ONSHI_BENCH_UPDATE_BATCH="20",
    )
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
    proc, stats = _locust(
        tmp_path, f"bench/locust/{locustfile}.py", dead, _locust_env(ONSHI_PKI=pki, ONSHI_DATA=str(store)), seconds=3
    )
    assert proc.returncode != 0, proc.stderr[-3000:]
    requests, failures = stats.get("Aggregated", (0, 0))
    assert requests == failures, stats  # nothing answered


@pytest.mark.timeout(200)
def test_a_run_refused_by_the_server_fails(mtls_servers, tmp_path):
    """Plaintext against the mTLS server: every connection refused, exit non-zero."""
    serve, _, store, _ = mtls_servers
    proc, _ = _locust(
        tmp_path,
        "bench/locust/terminal.py",
        serve.target,
        _locust_env(ONSHI_BENCH_INSECURE="1", ONSHI_DATA=str(store)),
        seconds=3,
    )
    assert proc.returncode != 0, proc.stderr[-3000:]
