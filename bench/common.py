"""What every benchmark shares: the machine, the datasets under bench/out/, the
servers it starts on loopback, process CPU accounting, query samples, and the
writers of bench/RESULTS.md (current figures) and docs/INVESTIGATIONS.md (every
recorded run). Runnable scripts live beside this file; they import it as
`common`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = Path(os.environ.get("ONSHI_BENCH_OUT") or BENCH / "out")  # gitignored: datasets, CSVs, SQLite files
DATA = Path(os.environ.get("ONSHI_BENCH_DATA") or BENCH / "data")  # committed: figures the plots are drawn from
RESULTS = Path(os.environ.get("ONSHI_BENCH_RESULTS") or BENCH / "RESULTS.md")  # override: dry runs
COMPLETE = ".complete"  # marker written after a dataset finished generating (as scripts/run.sh)

SERVING = re.compile(r"(?:serving|listening) on (\S+?):(\d+)")  # serve | ingest-serve


# --- the machine ------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()}× {model}, {_mem_gib()} GiB, Python {platform.python_version()}"


def _mem_gib() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20)
    return 0


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def command_line() -> str:
    """The exact command as a person would retype it from the repository root."""
    argv = list(sys.argv)
    if argv[0].startswith("onshi "):  # run through `onshi bench NAME`
        return argv[0] + "".join(" " + shlex.quote(a) for a in argv[1:])
    if argv[0].endswith(".py"):
        with contextlib.suppress(ValueError):
            argv[0] = os.path.relpath(argv[0], ROOT)
        argv.insert(0, "python")
    elif argv[0].endswith("onshi"):
        argv[0] = "onshi"
    return " ".join(shlex.quote(a) for a in argv)


# --- onshi executables ------------------------------------------------------


def onshi_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("onshi")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "onshi.cli"]


def locust_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("locust")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("locust")
    if not found:
        raise SystemExit("locust is not installed: ONSHI_EXTRAS=test,bench scripts/setup.sh")
    return [found]


# --- datasets ---------------------------------------------------------------


def dataset_dir(persons: int, name: str = "gen") -> Path:
    """Named after the history record version, so a cached store of an older
    layout is generated again rather than read wrongly."""
    from onshi.core import history

    return OUT / f"{name}-{persons}-v{history.VERSION}"


def dataset(persons: int, *, quiet: bool = False, name: str = "gen") -> Path:
    """A generated store of `persons` persons, reused when already complete.
    `name` keeps a bench's own copy apart (one that servers write into).

    Generation time and size are recorded in bench-gen.json beside the store so the
    scale table can report them without regenerating."""
    path = dataset_dir(persons, name)
    if (path / COMPLETE).exists():
        return path
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"bench: generating {persons:,} persons into {path} (reused next time)", flush=True)
    import resource

    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([*onshi_cmd(), "gen", "--persons", str(persons), "--out", str(path)], check=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # Wall time on a shared machine is mostly other people's work; CPU time is gen's.
    info = {
        "persons": persons,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "bytes": store_bytes(path),
        "date": now_utc(),
        "machine": machine(),
        "loadavg": os.getloadavg()[0],
    }
    (path / "bench-gen.json").write_text(json.dumps(info, indent=1))
    (path / COMPLETE).touch()
    return path


def gen_info(path: Path) -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((path / "bench-gen.json").read_text())
    return {}


def store_bytes(path: Path) -> int:
    """Bytes LMDB really uses (pages in use), not the sparse map size."""
    import lmdb

    env = lmdb.open(str(path), readonly=True, max_dbs=32, lock=False)
    try:
        info, stat = env.info(), env.stat()
        return (info["last_pgno"] + 1) * stat["psize"]
    finally:
        env.close()


def copy_dataset(src: Path, dst: Path) -> Path:
    """A private copy for scenarios that write (insurer updates), so the cached
    dataset stays the same for every run."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in os.listdir(src):
        if name.endswith((".mdb", ".json")):
            subprocess.run(["cp", "--sparse=always", str(src / name), str(dst / name)], check=True)
    return dst


# --- query samples ------------------------------------------------------------


def sample_queries(path: Path, count: int = 20_000, seed: int = 7, *, cache: bool = True) -> dict:
    """Card serials and insured numbers that exist in the store, sampled uniformly
    in one pass over each index (seconds even at 10M persons).

    Returns {"cards": [hex serial], "numbers": [[insurer, symbol, number, branch,
    "YYYY-MM-DD" birth date]], "as_of": "YYYY-MM-DD"} and caches it beside the
    store (cache=False: nothing is written there, for a store that is not ours).
    Reads take LMDB's reader lock: a writer may be at work on the store."""
    path = Path(path)
    cached = path / f"queries-{count}-{seed}.json"
    if cache:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(cached.read_text())
    import lmdb

    from onshi.core import dates, history, identifiers

    rng = random.Random(seed)
    env = lmdb.open(str(path), readonly=True, max_dbs=32)
    card_db = env.open_db(b"card", create=False)
    number_db = env.open_db(b"number", create=False)
    history_db = env.open_db(b"history", create=False)
    cards: list[str] = []
    numbers: list[list] = []
    with env.begin() as txn:
        # One pass over each index keeping a uniform random sample: spread
        # over the whole key space, so lookups touch the whole B-tree as real
        # traffic does. ~1 s per million keys, cached per store.
        for key, _ in _spread(txn.cursor(card_db), txn.stat(card_db)["entries"], count, rng):
            cards.append(identifiers.card_serial_text(key))
        for key, link in _spread(txn.cursor(number_db), txn.stat(number_db)["entries"], count, rng):
            value = txn.get(link, db=history_db)
            if value is None:
                continue
            birth_day, _ = history.parse_history(value)
            insurer, symbol, number, branch = key.decode().split("\x1f")
            numbers.append([insurer, symbol, number, branch, dates.from_day(birth_day).isoformat()])
    env.close()
    out = {"cards": sorted(cards), "numbers": sorted(numbers), "as_of": dates.from_day(dates.today_jst()).isoformat()}
    random.Random(seed).shuffle(out["cards"])
    random.Random(seed).shuffle(out["numbers"])
    if cache:
        with contextlib.suppress(OSError):
            cached.write_text(json.dumps(out))
    return out


def _spread(cursor, entries: int, count: int, rng: random.Random):
    """A uniform random sample of `count` keys (without replacement) in one
    pass over the index."""
    wanted = sorted(rng.sample(range(entries), min(count, entries)))
    if not wanted:
        return
    j = 0
    for i, (key, value) in enumerate(cursor.iternext(keys=True, values=True)):
        if i == wanted[j]:
            yield bytes(key), bytes(value)
            j += 1
            if j == len(wanted):
                return


def write_queries_file(path: Path, queries: dict, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(queries))
    return dest


# --- servers on loopback -------------------------------------------------------

# `nice -n N` for the processes a benchmark measures (servers, locust); set by
# --nice. A negative N (root) is what a latency figure on a machine shared with
# other work needs: without it, the scheduler's queue is what gets measured.
NICE: list[str] = []


def niced(argv: list[str]) -> list[str]:
    return [*NICE, *argv]


class Server:
    """An onshi server subprocess that prints `serving on HOST:PORT` when ready."""

    def __init__(self, argv: list[str], name: str, env: dict | None = None, ready_timeout: float = 60):
        self.name = name
        argv = niced(argv)
        self.argv = argv
        self.log_path = OUT / "logs" / f"{name}-{os.getpid()}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.ready_line = ""
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.address = self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> str:
        import selectors

        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if sel.select(timeout=0.5):
                line = self.proc.stdout.readline()
                self.log.write(line)
                m = SERVING.search(line)
                if m:
                    self.ready_line = line.strip()
                    # Keep draining stdout so a chatty server never blocks on a full pipe.
                    import threading

                    threading.Thread(target=self._drain, daemon=True).start()
                    return f"{m.group(1)}:{m.group(2)}"
        self.log.flush()
        self.log.seek(0)
        told = self.log.read()[-3000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not start ({' '.join(self.argv)}); see {self.log_path}:\n{told}")

    def _drain(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stdout:
                self.log.write(line)

    def pids(self) -> list[int]:
        """The server process and every process it forked (the workers)."""
        return [self.proc.pid, *descendants(self.proc.pid)]

    def worker_pids(self) -> list[int]:
        kids = descendants(self.proc.pid)
        return kids or [self.proc.pid]  # --workers 1 may serve in the parent itself

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray workers of our own group only
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def serve_eligibility(data: Path, workers: int, extra: list[str] | None = None, env: dict | None = None) -> Server:
    argv = [*onshi_cmd(), "serve", "--data", str(data), "--port", "0", "--workers", str(workers)]
    argv += insecure_flag("serve")
    return Server(argv + list(extra or []), f"serve-w{workers}", env=env)


def serve_secondary(data: Path, extra: list[str] | None = None, env: dict | None = None) -> Server:
    argv = [*onshi_cmd(), "ingest-serve", "--data", str(data), "--port", "0"]
    argv += insecure_flag("ingest-serve")
    return Server(argv + list(extra or []), "ingest-serve", env=env)


def insecure_flag(command: str) -> list[str]:
    """Once mTLS lands, local demos need `--insecure-dev` (loopback only); the
    benchmarks measure the bare service, so pass it when the command has it."""
    try:
        help_text = subprocess.run(
            [*onshi_cmd(), command, "--help"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ["--insecure-dev"] if "--insecure-dev" in help_text else []


def has_command(command: str) -> bool:
    try:
        r = subprocess.run([*onshi_cmd(), command, "--help"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- CPU accounting --------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from the kernel's own accounting."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def total_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def tree_cpu(pid: int) -> float:
    """A process's CPU and that of every process it started (workers, helpers)."""
    return total_cpu([pid, *descendants(pid)])


def switches(pid: int, involuntary: bool = False) -> int:
    """Voluntary context switches over all of a process's threads (each one a
    thread blocking: on the GIL, a futex, epoll), so per call they count
    hand-offs; with `involuntary`, preemptions as well."""
    keys = ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches") if involuntary else ("voluntary_ctxt_switches",)
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            for line in (task / "status").read_text().splitlines():
                if line.startswith(keys):
                    total += int(line.split()[1])
    return total


# --- statistics ------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def median(values) -> float:
    """The middle value (the upper one of an even count), as the tables report."""
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def fmt_ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


# --- RESULTS.md and the investigations log ----------------------------------------
#
# bench/RESULTS.md holds the current figures: one table per area, a row per
# figure with the command that made it, when and at what load. A recorded run
# replaces the rows of the figures it measured and adds its whole output, dated,
# at the end of its area in docs/INVESTIGATIONS.md (where the earlier runs and
# the investigations behind the figures are kept).

LOG = Path(os.environ.get("ONSHI_BENCH_LOG") or ROOT / "docs" / "INVESTIGATIONS.md")  # override: dry runs
FIGURE_HEADER = ("figure", "measured", "target", "command", "when (UTC) · load")


def add_record_flag(parser) -> None:
    parser.add_argument(
        "--record",
        action="store_true",
        help="put the figures in bench/RESULTS.md (replacing the rows of the same figures) and the "
        "whole run, dated, in docs/INVESTIGATIONS.md (default: print only)",
    )


@dataclass
class Run:
    """A recorded run: the command a person would retype, when it ended, the load then."""

    command: str = field(default_factory=lambda: command_line())
    when: str = field(default_factory=lambda: now_utc())
    load: float = field(default_factory=lambda: os.getloadavg()[0])


def record_run(area: str, figures: list[tuple[str, str, str]], body: str, run: Run | None = None) -> Run:
    """The run's (figure, measured, target) rows into RESULTS.md and `body`
    (markdown: its tables and notes) into the log, both under `## {area}`."""
    run = run or Run()
    put_figures(area, figures, run)
    log_entry(area, body, run)
    print(f"bench: recorded in {RESULTS} ({area}) and {LOG}", flush=True)
    return run


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header, rows) -> str:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _section(lines: list[str], area: str) -> tuple[int, int] | None:
    """(heading line, end) of `## {area}`: up to the next `## ` heading."""
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == f"## {area}"), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return start, end


def put_figures(area: str, figures: list[tuple[str, str, str]], run: Run) -> None:
    """Each figure's row of the area's table replaced (or added after its last
    row); the section and its table are made when missing."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    lines = text.splitlines(keepends=True)
    head = md_table(FIGURE_HEADER, []).split("\n")
    if _section(lines, area) is None:
        lines[-1] = lines[-1].rstrip("\n") + "\n"
        lines += ["\n", f"## {area}\n", "\n", head[0] + "\n", head[1] + "\n"]
    start, end = _section(lines, area)
    table = next((i for i in range(start, end) if lines[i].rstrip("\n") == head[0]), None)
    if table is None:
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        lines[end:end] = ["\n", head[0] + "\n", head[1] + "\n"]
        table = end + 1
    for what, measured, target in figures:
        row = (
            md_table(
                FIGURE_HEADER,
                [(what, measured, target, f"`{run.command}`", f"{run.when.removesuffix(' UTC')} · {run.load:.1f}")],
            ).split("\n")[2]
            + "\n"
        )
        last = table + 1
        while last + 1 < len(lines) and lines[last + 1].startswith("|"):
            last += 1
        mine = next((i for i in range(table + 2, last + 1) if lines[i].startswith(f"| {cell(what)} |")), None)
        if mine is None:
            lines.insert(last + 1, row)
        else:
            lines[mine] = row
    RESULTS.write_text("".join(lines))


def log_entry(area: str, body: str, run: Run) -> None:
    """A dated entry at the end of the log's `## {area}` (made when missing)."""
    text = LOG.read_text() if LOG.exists() else "# Investigations\n"
    lines = text.splitlines(keepends=True)
    if _section(lines, area) is None:
        lines[-1] = lines[-1].rstrip("\n") + "\n"
        lines += ["\n", f"## {area}\n"]
    _, end = _section(lines, area)
    while not lines[end - 1].strip():
        end -= 1
    entry = f"\n### {run.when} — `{run.command}`\n\n{machine()}, load average {run.load:.1f}.\n\n{body.strip()}\n"
    lines[end:end] = [entry] + (["\n"] if end < len(lines) and lines[end].startswith("## ") else [])
    LOG.write_text("".join(lines))


def record(name: str, entry: dict) -> None:
    """Machine-readable figures (committed) that bench/plot.py draws from."""
    DATA.mkdir(parents=True, exist_ok=True)
    with open(DATA / f"{name}.jsonl", "a") as f:
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def load_records(name: str) -> list[dict]:
    path = DATA / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**pass**" if ok else "**FAIL**")
