"""Peers on the same data, same run: the card check chain (certificate serial ->
link ID -> history -> the answer for the visit date, ready to send) in

  * onshi native  - the Cython engine over liblmdb (single calls, and batches);
  * onshi pure    - the reference engine over the `lmdb` package;
  * SQLite        - stdlib sqlite3, in-process, indexed (WITHOUT ROWID primary
                    keys), one JOIN per check;
  * Redis         - Debian's redis-server started here on 127.0.0.1 (no
                    persistence), two GETs per check, not pipelined and
                    pipelined (100 checks per round of pipelines);

plus bytes per person of each. SQLite and Redis fetch the same history record
bytes and decide with the same code as the pure engine (onshi.core.history), so
each row differs from the pure engine only in how the record is found; a
"fetch only" figure shows the storage cost alone.

    python bench/peers.py --persons 1000000        (or: onshi bench peers ...)

The store comes from `onshi gen` (bench/out/gen-N, reused); the SQLite copy is
built once beside it; Redis is loaded every run (it keeps nothing on disk).
Each figure is checks per CPU-second (this process's CPU time, plus
redis-server's for Redis): what one core does, whatever else the shared cores
are running. It is the best of --rounds rounds of --seconds each, interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

AREA = "Peers"
HEADER = [
    "persons",
    "native checks/s (batch)",
    "pure",
    "SQLite (fetch)",
    "Redis (fetch)",
    "Redis pipelined (fetch)",
    "bytes/person LMDB · SQLite · Redis",
    "native ÷ SQLite",
    "native ÷ Redis pipelined",
    "targets",
]
PIPELINE = 100


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="onshi bench peers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--persons", type=int, default=1_000_000, help="dataset size (default 1,000,000)")
    p.add_argument("--data", type=Path, help="use this store instead of a generated one")
    p.add_argument("--queries", type=int, default=50_000, help="distinct card serials sampled (default 50,000)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per round per peer (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the best is kept (default 3)")
    p.add_argument("--no-redis", action="store_true", help="skip Redis (e.g. redis-server not installed)")
    common.add_record_flag(p)
    return p.parse_args(argv)


# --- the chain in each peer -------------------------------------------------------


def decide(value, day: int) -> bytes:
    """The pure engine's decision over a fetched history record."""
    from onshi.core import history

    if value is None:
        return history.response(history.NO_RECORD)
    _, entries = history.parse_history(value)
    validity, chosen = history.choose_by_card(entries, day)
    return history.response(validity, [entries[i].payload for i in chosen])


def build_sqlite(env, path: Path) -> float:
    """Copy the card and history databases into SQLite; returns seconds taken."""
    started = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    db.executescript("""
        PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
        CREATE TABLE card (serial BLOB PRIMARY KEY, link BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE history (link BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    """)
    with env.begin() as txn:
        for name, table in ((b"history", "history"), (b"card", "card")):
            cur = txn.cursor(env.open_db(name, create=False))
            rows = ((bytes(k), bytes(v)) for k, v in cur.iternext())
            db.executemany(f"INSERT INTO {table} VALUES (?, ?)", rows)  # keys arrive sorted
    db.commit()
    db.execute("VACUUM")
    db.close()
    os.replace(tmp, path)
    return time.perf_counter() - started


@contextlib.contextmanager
def redis_server():
    exe = "redis-server"
    if subprocess.run(["sh", "-c", f"command -v {exe}"], capture_output=True, check=False).returncode:
        raise FileNotFoundError("redis-server not installed (ONSHI_EXTRAS=bench scripts/setup.sh)")
    port = common.free_port()
    workdir = tempfile.mkdtemp(prefix="onshi-redis-")
    proc = subprocess.Popen(
        [
            exe,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield client, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            for name in os.listdir(workdir):
                os.unlink(os.path.join(workdir, name))
            os.rmdir(workdir)


def load_redis(client, env) -> tuple[float, int]:
    """c:<serial key> -> link key, h:<link key> -> history record. Returns
    (seconds, bytes of memory the data added)."""
    client.flushall()
    base = client.info("memory")["used_memory"]
    started = time.perf_counter()
    with env.begin() as txn:
        for name, prefix in ((b"history", b"h:"), (b"card", b"c:")):
            cur = txn.cursor(env.open_db(name, create=False))
            pipe = client.pipeline(transaction=False)
            for n, (k, v) in enumerate(cur.iternext(), 1):
                pipe.set(prefix + bytes(k), bytes(v))
                if n % 10_000 == 0:
                    pipe.execute()
            pipe.execute()
    return time.perf_counter() - started, client.info("memory")["used_memory"] - base


# --- measuring ----------------------------------------------------------------------


def rate(fn, keys: list, seconds: float, per_call: int = 1, other_pids: tuple = ()) -> float:
    """Calls fn over the keys (cycling) for about `seconds` of wall time and
    returns checks per CPU-second: this process's CPU time plus that of
    `other_pids` (redis-server). On a machine shared with other work, wall
    time measures the scheduler; CPU time measures the check chain."""
    done = 0
    i = 0
    n = len(keys)
    started = time.perf_counter()
    cpu0 = time.process_time() + common.total_cpu(list(other_pids))
    deadline = started + seconds
    while True:
        for _ in range(64):
            fn(keys[i % n])
            i += 1
        done += 64 * per_call
        if time.perf_counter() >= deadline:
            cpu = time.process_time() + common.total_cpu(list(other_pids)) - cpu0
            return done / max(cpu, 1e-3)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from onshi.core import dates, identifiers
    from onshi.core.engine import open_engine

    store = args.data or common.dataset(args.persons)
    persons = _persons(store)
    queries = common.sample_queries(store, args.queries)
    keys = [identifiers.card_serial_key(s) for s in queries["cards"]]
    # A fixed visit date inside the generated data (gen.py REFERENCE onwards).
    day = dates.today_jst()
    batches = [keys[i : i + 1000] for i in range(0, len(keys) - 999, 1000)] or [keys]
    pipes = [keys[i : i + PIPELINE] for i in range(0, len(keys) - PIPELINE + 1, PIPELINE)]

    native = open_engine(store, "native")
    pure = open_engine(store, "pure")
    sqlite_path = store.parent / f"{store.name}.sqlite"
    sqlite_build = None
    if not sqlite_path.exists():
        print(f"peers: building {sqlite_path} (once)", flush=True)
        sqlite_build = build_sqlite(pure.env, sqlite_path)  # py-lmdb: one handle per env per process
    db = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True, check_same_thread=False)
    db.execute("PRAGMA cache_size = -262144")  # 256 MiB page cache: give SQLite every chance
    db.execute("PRAGMA mmap_size = 17179869184")  # and memory-mapped reads, as LMDB has
    join = "SELECT h.value FROM card c JOIN history h ON h.link = c.link WHERE c.serial = ?"

    def sqlite_chain(k):
        row = db.execute(join, (k,)).fetchone()
        return decide(row[0] if row else None, day)

    def sqlite_fetch(k):
        return db.execute(join, (k,)).fetchone()

    peers: dict[str, tuple] = {
        "native": (lambda k: native.check_by_card(k, day), keys, 1, ()),
        "native batch": (lambda b: native.check_by_card_batch(b, day), batches, 1000, ()),
        "pure": (lambda k: pure.check_by_card(k, day), keys, 1, ()),
        "SQLite": (sqlite_chain, keys, 1, ()),
        "SQLite fetch": (sqlite_fetch, keys, 1, ()),
    }
    redis_info = {}
    stack = contextlib.ExitStack()
    if not args.no_redis:
        try:
            client, redis_pid = stack.enter_context(redis_server())
            print("peers: loading Redis", flush=True)
            seconds, used = load_redis(client, pure.env)
            redis_info = {"load_s": round(seconds, 1), "bytes": used}

            def redis_chain(k):
                link = client.get(b"c:" + k)
                return decide(client.get(b"h:" + link) if link else None, day)

            def redis_fetch(k):
                link = client.get(b"c:" + k)
                return client.get(b"h:" + link) if link else None

            def redis_pipelined(batch, decide_too=True):
                pipe = client.pipeline(transaction=False)
                for k in batch:
                    pipe.get(b"c:" + k)
                links = pipe.execute()
                pipe = client.pipeline(transaction=False)
                for link in links:
                    if link:
                        pipe.get(b"h:" + link)
                values = iter(pipe.execute())
                if decide_too:
                    return [decide(next(values) if link else None, day) for link in links]
                return values

            both = (redis_pid,)  # the client here and the server there both work per check
            peers["Redis"] = (redis_chain, keys, 1, both)
            peers["Redis fetch"] = (redis_fetch, keys, 1, both)
            peers["Redis pipelined"] = (redis_pipelined, pipes, PIPELINE, both)
            peers["Redis pipelined fetch"] = (lambda b: redis_pipelined(b, False), pipes, PIPELINE, both)
        except (FileNotFoundError, ImportError) as exc:
            print(f"peers: Redis skipped: {exc}", file=sys.stderr)
            redis_info = {"skipped": str(exc)}

    with stack:
        # Same answers from every peer before timing anything.
        for k in keys[:200]:
            expected = native.check_by_card(k, day)
            assert pure.check_by_card(k, day) == expected, "pure and native disagree"
            assert sqlite_chain(k) == expected, "SQLite chain and native disagree"
            if "Redis" in peers:
                assert peers["Redis"][0](k) == expected, "Redis chain and native disagree"
        best: dict[str, float] = {}
        for rnd in range(args.rounds):
            for name, (fn, items, per, others) in peers.items():
                r = rate(fn, items, args.seconds, per, others)
                best[name] = max(best.get(name, 0.0), r)
            print(
                f"peers: round {rnd + 1}/{args.rounds}: " + ", ".join(f"{n} {best[n]:,.0f}/s" for n in peers),
                flush=True,
            )
    native.close()
    pure.close()
    db.close()

    sizes = {"LMDB": common.store_bytes(store), "SQLite": sqlite_path.stat().st_size}
    if "bytes" in redis_info:
        sizes["Redis"] = redis_info["bytes"]
    result = {
        "date": common.now_utc(),
        "command": common.command_line(),
        "persons": persons,
        "checks_per_s": {k: round(v) for k, v in best.items()},
        "bytes_per_person": {k: round(v / persons, 1) for k, v in sizes.items()},
        "sqlite_build_s": round(sqlite_build, 1) if sqlite_build else None,
        "redis": redis_info,
        "machine": common.machine(),
        "loadavg": os.getloadavg()[0],
    }
    vs_sqlite = best["native"] / best["SQLite"]
    vs_redis = best["native"] / best["Redis pipelined"] if "Redis pipelined" in best else None
    result["native_over_sqlite"] = round(vs_sqlite, 1)
    result["native_over_redis_pipelined"] = round(vs_redis, 2) if vs_redis else None
    ok_sqlite = vs_sqlite >= 20
    ok_redis = None if vs_redis is None else vs_redis > 1
    result["targets"] = {"native >= 20x SQLite": ok_sqlite, "native > Redis pipelined": ok_redis}
    report(result)
    if args.record:
        common.record_run(AREA, *figures_and_body(result))
        common.record("peers", result)
    return 0 if ok_sqlite and ok_redis is not False else 1


def _persons(store: Path) -> int:
    import lmdb

    env = lmdb.open(str(store), readonly=True, max_dbs=32, lock=False)
    with env.begin() as txn:
        n = txn.stat(env.open_db(b"history", txn=txn, create=False))["entries"]
    env.close()
    return n


def report(r: dict) -> None:
    print(
        f"\npeers on {r['persons']:,} persons (card checks per CPU-second, best of rounds; "
        f"load avg {r['loadavg']:.1f}):"
    )
    for name, v in r["checks_per_s"].items():
        print(f"  {name:24s} {v:>12,}")
    print("  bytes per person: " + ", ".join(f"{k} {v:,.0f}" for k, v in r["bytes_per_person"].items()))
    print(
        f"  native ÷ SQLite {r['native_over_sqlite']}× (target ≥ 20×: "
        f"{'pass' if r['targets']['native >= 20x SQLite'] else 'FAIL'})"
    )
    if r["native_over_redis_pipelined"] is not None:
        print(
            f"  native ÷ Redis pipelined {r['native_over_redis_pipelined']}× (target > 1: "
            f"{'pass' if r['targets']['native > Redis pipelined'] else 'FAIL'})"
        )


def figures_and_body(r: dict) -> tuple[list[tuple[str, str, str]], str]:
    c = r["checks_per_s"]
    b = r["bytes_per_person"]

    def f(name, fetch=None):
        if name not in c:
            return "not measured"
        return f"{c[name]:,}" + (f" ({c[fetch]:,})" if fetch and fetch in c else "")

    ok_sqlite, ok_redis = r["targets"]["native >= 20x SQLite"], r["targets"]["native > Redis pipelined"]
    targets = f"≥ 20× SQLite: {common.verdict(ok_sqlite)}; > Redis pipelined: {common.verdict(ok_redis)}"
    sizes = " · ".join(f"{b[k]:,.0f}" if k in b else "—" for k in ("LMDB", "SQLite", "Redis"))
    row = [
        f"{r['persons']:,}",
        f("native", "native batch"),
        f("pure"),
        f("SQLite", "SQLite fetch"),
        f("Redis", "Redis fetch"),
        f("Redis pipelined", "Redis pipelined fetch"),
        sizes,
        f"{r['native_over_sqlite']}×",
        f"{r['native_over_redis_pipelined']}×" if r["native_over_redis_pipelined"] else "—",
        targets,
    ]
    of = f"{r['persons']:,} persons, card checks per CPU-second"

    def met(ok):
        return "not measured" if ok is None else "met" if ok else "**not met**"

    figures = [
        (f"native single calls ÷ SQLite chain ({of})", f"{r['native_over_sqlite']}×", f"≥ 20×: {met(ok_sqlite)}")
    ]
    if r["native_over_redis_pipelined"]:
        figures.append(
            (
                f"native single calls ÷ Redis pipelined ({of})",
                f"{r['native_over_redis_pipelined']}×",
                f"ahead: {met(ok_redis)}",
            )
        )
    figures.append((f"bytes per person: LMDB · SQLite · Redis ({r['persons']:,} persons)", sizes, "—"))
    return figures, common.md_table(HEADER, [row])


if __name__ == "__main__":
    sys.exit(main())
