"""Native-engine specifics (the shared native/pure suite is tests/test_engine.py):
buffer lifetimes, use after close, threads, a live writer process committing and
growing the map under an open engine, corrupt records, leaks.

Every store is a real LMDB file set in a tmp dir written through the real Writer;
writers that must run concurrently are real processes (`python -m tests.test_native`).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading

import lmdb
import pytest

from onshi.core import dates, history, identifiers
from onshi.core.pure import PureEngine
from onshi.core.store import link_key
from onshi.core.writer import Writer
from onshi.v1 import eligibility_pb2 as epb
from onshi.v1 import qualification_pb2 as qpb
from tests.conftest import require_native

require_native()

from onshi.ext._engine import NativeEngine  # noqa: E402 - only once it is known to be built

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Day numbers around every boundary of the patterns below.
DAYS = (15999, 16000, 16999, 17000, 17999, 18000, 18199, 18200, 18499, 18500, 18999, 19000, 19999, 20000, 25000)
PATTERNS = 6


def serial(i: int) -> bytes:
    return identifiers.card_serial_key(f"C0DE{i:06X}")


def insurer(scheme: str, i: int) -> str:
    return identifiers.with_check_digit(f"{scheme}{i % 1000:05d}")


def qual(ins: str, i: int, j: int, acq: int, loss: int | None, name_pad: int = 0) -> qpb.Qualification:
    late = identifiers.is_late_elderly(ins)
    q = qpb.Qualification(
        insurer_number=ins,
        insurer_name="保険者" + "髙" * name_pad,
        symbol="" if late else f"記{i % 97}",
        number=f"{i}-{j}",
        branch="" if late else f"{j % 3:02d}",
        acquisition_date=dates.to_proto(dates.from_day(acq)),
        burden_ratio_percent=30,
    )
    if loss is not None:
        q.loss_date.CopyFrom(dates.to_proto(dates.from_day(loss)))
        q.loss_reason = 3
    return q


def person(i: int, name_pad: int = 0) -> tuple[qpb.Person, list[qpb.Qualification]]:
    """Person i: one of the answer shapes of DOMAIN.md §3, by i % PATTERNS."""
    birth = 3000 + i * 7 % 12000
    p = qpb.Person(
        name="𠮷田 太郎" + "葛\U000e0100" * name_pad,
        name_kana="ヨシダ タロウ",
        sex=1 + i % 2,
        birth_date=dates.to_proto(dates.from_day(birth)),
        address="東京都千代田区",
        postcode="100-0001",
    )
    shape = i % PATTERNS
    if shape == 0:  # valid
        quals = [qual(insurer("01", i), i, 0, 18000, None, name_pad)]
    elif shape == 1:  # job change: the old number answers newer-exists
        quals = [
            qual(insurer("06", i), i, 0, 17000, 18500, name_pad),
            qual(insurer("31", i), i, 1, 18500, None, name_pad),
        ]
    elif shape == 2:  # dual enrollment: seamen + late elderly
        quals = [
            qual(insurer("02", i), i, 0, 18000, None, name_pad),
            qual(insurer("39", i), i, 1, 18200, None, name_pad),
        ]
    elif shape == 3:  # lost, nothing newer
        quals = [qual(insurer("01", i), i, 0, 16000, 19000, name_pad)]
    elif shape == 4:  # not begun yet
        quals = [qual(insurer("06", i), i, 0, 20000, None, name_pad)]
    else:  # three in a row, the middle one overlapping the last
        quals = [
            qual(insurer("32", i), i, 0, 16000, 17000, name_pad),
            qual(insurer("01", i), i, 1, 17000, 19000, name_pad),
            qual(insurer("39", i), i, 2, 18500, None, name_pad),
        ]
    return p, quals


def number_keys(i: int) -> list[bytes]:
    return [history.qualification_number_key(q) for q in person(i)[1]]


def birth_day(i: int) -> int:
    return dates.to_day(dates.from_proto(person(i)[0].birth_date))


def write_person(writer: Writer, i: int, name_pad: int = 0) -> None:
    """One durable transaction per person, as the ingest service writes."""
    p, quals = person(i, name_pad)

    def change(txn):
        link = txn.new_link_id()
        txn.put_history(link, p, quals)
        txn.link_card(serial(i), link)

    writer.apply(change)


def write_persons(path: str, first: int, count: int, *, map_size: int = 1 << 30) -> None:
    writer = Writer(path, map_size=map_size)
    try:
        for i in range(first, first + count):
            write_person(writer, i)
    finally:
        writer.close()


def rewrite_person(writer: Writer, i: int, name_pad: int) -> None:
    """Person i (link i + 1 in write_persons' stores) again, with longer names."""
    p, quals = person(i, name_pad)
    writer.apply(lambda txn: txn.put_history(i + 1, p, quals))


def run_writer(
    path: str, first: int, count: int, *, map_size: int = 1 << 30, name_pad: int = 0, rewrite: bool = False
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.test_native",
            path,
            str(first),
            str(count),
            str(map_size),
            str(name_pad),
            "rewrite" if rewrite else "add",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("native") / "store")
    write_persons(path, 0, 120)
    return path


@pytest.fixture
def engines(store):
    # pure first: a py-lmdb env opened later in the same process re-initialises the
    # reader table under the native env (LMDB allows one env per store per process)
    pure = PureEngine(store)
    native = NativeEngine(store)
    yield native, pure
    native.close()
    pure.close()


def card_queries(n_persons: int) -> list[bytes]:
    return [serial(i) for i in range(n_persons)] + [serial(10**6 + i) for i in range(5)]


def number_queries(n_persons: int) -> list[tuple[bytes, int]]:
    out = []
    for i in range(n_persons):
        for key in number_keys(i):
            out += [(key, birth_day(i)), (key, birth_day(i) + 1)]
    return [*out, (b"01234567\x1fx\x1f1\x1f00", 0)]


# --- answers -------------------------------------------------------------------


def test_answers_equal_pure_single_and_batch(engines):
    native, pure = engines
    rng = random.Random(7)
    cards = card_queries(120)
    numbers = number_queries(120)
    for day in DAYS:
        for key in cards:
            assert native.check_by_card(key, day) == pure.check_by_card(key, day)
        for key, birth in numbers:
            assert native.check_by_number(key, birth, day) == pure.check_by_number(key, birth, day)
        # batches: shuffled, with duplicates, in the caller's order
        batch = cards + rng.sample(cards, 30)
        rng.shuffle(batch)
        assert native.check_by_card_batch(batch, day) == pure.check_by_card_batch(batch, day)
        nbatch = numbers + rng.sample(numbers, 30)
        rng.shuffle(nbatch)
        assert native.check_by_number_batch(nbatch, day) == pure.check_by_number_batch(nbatch, day)
    assert native.check_by_card_batch([], 18000) == []
    assert native.check_by_number_batch([], 18000) == []


def test_every_validity_is_exercised(engines):
    native, _ = engines
    seen = {r[1] for day in DAYS for r in native.check_by_number_batch(number_queries(12), day)}
    seen |= {r[1] for day in DAYS for r in native.check_by_card_batch(card_queries(12), day)}
    assert seen == {history.VALID, history.INVALID, history.INVALID_NEWER_EXISTS, history.NO_RECORD, history.MULTIPLE}


def test_answers_parse_as_check_responses(engines):
    native, _ = engines
    resp = epb.CheckResponse.FromString(native.check_by_card(serial(2), 18300))  # dual enrollment
    assert resp.validity == epb.VALIDITY_MULTIPLE
    assert [q.insurer_number for q in resp.qualifications] == [insurer("02", 2), insurer("39", 2)]
    assert resp.qualifications[0].person.name == "𠮷田 太郎"
    # typed lost number: newer exists, and the newer insurer is not revealed
    old_number = number_keys(1)[0]
    resp = epb.CheckResponse.FromString(native.check_by_number(old_number, birth_day(1), 18600))
    assert resp.validity == epb.VALIDITY_INVALID_NEWER_EXISTS
    assert [q.insurer_number for q in resp.qualifications] == [insurer("06", 1)]


def test_oversize_keys_are_no_record_and_empty_keys_raise(engines):
    native, pure = engines
    assert native.check_by_card(b"\x01" * 600, 18000) == pure.check_by_card(b"\x01" * 600, 18000)
    assert native.check_by_card_batch([b"\x01" * 600], 18000) == [history.response(history.NO_RECORD)]
    with pytest.raises(ValueError):
        native.check_by_card(b"", 18000)
    with pytest.raises(ValueError):
        native.check_by_number_batch([(b"", 0)], 18000)
    with pytest.raises(TypeError):
        native.check_by_card("C0DE000001", 18000)
    with pytest.raises(TypeError):
        native.check_by_card_batch([serial(1), "C0DE000001"], 18000)


def test_raw_histories_equal_pure(engines):
    native, pure = engines
    keys = [k for i in range(30) for k in number_keys(i)] + [b"nobody", b"\x02" * 700]
    random.Random(3).shuffle(keys)
    assert native.histories_by_number(keys) == pure.histories_by_number(keys)
    assert native.histories_by_number([]) == []
    for link_id in (1, 2, 60, 120, 121, 10**12):
        assert native.history_by_link(link_id) == pure.history_by_link(link_id)
    record = native.history_by_link(3)
    birth, entries = history.parse_history(record)
    assert birth == birth_day(2) and len(entries) == 2
    with pytest.raises(OverflowError):
        native.history_by_link(-1)


# --- lifetimes -------------------------------------------------------------------


def test_results_outlive_many_calls_and_close(store):
    native = NativeEngine(store)
    first = [native.check_by_card(serial(i), 18600) for i in range(60)]
    batch = native.check_by_card_batch([serial(i) for i in range(60)], 18600)
    raw = native.histories_by_number(number_keys(5))
    expected = [bytes(b) for b in first]  # copies made while the engine is open
    for _ in range(20):  # reuse of the pooled transactions must not touch old answers
        native.check_by_card_batch([serial(i) for i in range(120)], 16000)
    native.close()
    assert first == expected == batch
    for answer in first:
        epb.CheckResponse.FromString(answer)
    assert history.parse_history(raw[0])[0] == birth_day(5)


def test_use_after_close_raises(store):
    native = NativeEngine(store)
    assert not native.closed
    native.close()
    native.close()  # idempotent
    assert native.closed
    for call in (
        lambda: native.check_by_card(serial(1), 18000),
        lambda: native.check_by_number(number_keys(1)[0], birth_day(1), 18000),
        lambda: native.check_by_card_batch([serial(1)], 18000),
        lambda: native.check_by_number_batch([(number_keys(1)[0], 0)], 18000),
        lambda: native.histories_by_number([b"x"]),
        lambda: native.history_by_link(1),
    ):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_missing_store_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        NativeEngine(str(tmp_path / "nothing"))
    env = lmdb.open(str(tmp_path / "bare"), max_dbs=4)  # an LMDB env but not an onshi store
    env.close()
    with pytest.raises(FileNotFoundError, match="not an onshi store"):
        NativeEngine(str(tmp_path / "bare"))


def test_closing_while_other_threads_check(store):
    native = NativeEngine(store)
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                native.check_by_card_batch([serial(i) for i in range(120)], 18000)
            except ValueError as exc:  # "closed" is the only acceptable failure
                if "closed" not in str(exc):
                    errors.append(exc)
                return
            except BaseException as exc:  # noqa: BLE001 - any failure in the thread is reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    native.close()  # waits for the checks in flight, then unmaps
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors


# --- threads -----------------------------------------------------------------------


def test_threads_get_the_same_answers_as_pure(engines):
    native, pure = engines
    cards = card_queries(120)
    numbers = number_queries(120)
    expected_cards = {(k, d): pure.check_by_card(k, d) for k in cards for d in DAYS}
    expected_numbers = {(k, b, d): pure.check_by_number(k, b, d) for k, b in numbers for d in DAYS}
    failures: list[str] = []

    def worker(seed: int):
        rng = random.Random(seed)
        for _ in range(300):
            day = rng.choice(DAYS)
            if rng.random() < 0.5:
                keys = rng.sample(cards, 20)
                got = (
                    native.check_by_card_batch(keys, day)
                    if rng.random() < 0.5
                    else [native.check_by_card(k, day) for k in keys]
                )
                if got != [expected_cards[(k, day)] for k in keys]:
                    failures.append(f"cards day {day}")
            else:
                qs = rng.sample(numbers, 20)
                got = native.check_by_number_batch(qs, day)
                if got != [expected_numbers[(k, b, day)] for k, b in qs]:
                    failures.append(f"numbers day {day}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures


# --- a live writer process ---------------------------------------------------------


def test_live_writer_commits_are_seen_by_the_next_check(tmp_path):
    path = str(tmp_path / "store")
    write_persons(path, 0, 6)
    native = NativeEngine(path)
    try:
        assert native.check_by_card(serial(100), 18000) == history.response(history.NO_RECORD)
        writer = run_writer(path, 100, 3)  # commits one person per line read
        for i in range(100, 103):
            writer.stdin.write("\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == f"committed {i}"
            # the pooled transaction is renewed per call, so the commit is visible now
            answer = native.check_by_card(serial(i), 25000)
            assert answer == native.check_by_card_batch([serial(i)], 25000)[0]
            assert epb.CheckResponse.FromString(answer).validity != epb.VALIDITY_NO_RECORD
            assert native.check_by_card(serial(i + 1), 25000) == history.response(history.NO_RECORD)
        writer.stdin.close()
        assert writer.wait(30) == 0
    finally:
        native.close()


def test_map_resize_by_the_writer_while_open(tmp_path):
    path = str(tmp_path / "store")
    write_persons(path, 0, 4, map_size=64 * 1024)
    native = NativeEngine(path)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader():  # checks keep running while the writer grows the map
        while not stop.is_set():
            try:
                native.check_by_card_batch([serial(i) for i in range(0, 600, 7)], 18000)
                native.check_by_card(serial(3), 18000)
            except BaseException as exc:  # noqa: BLE001 - any failure in the thread is reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        # ~600 persons with long names: the 64 KiB map doubles several times
        writer = run_writer(path, 4, 600, map_size=64 * 1024, name_pad=40)
        writer.stdin.write("\n" * 600)
        writer.stdin.close()
        assert writer.wait(120) == 0
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors
        with lmdb.open(path, readonly=True, lock=False, max_dbs=32) as env:
            assert env.info()["map_size"] > 64 * 1024
        keys = [serial(i) for i in range(604)]
        batch = native.check_by_card_batch(keys, 18000)
        single = [native.check_by_card(k, 18600) for k in keys]
        assert native.remaps >= 1
        native.close()  # then the oracle, one env per store in this process
        pure = PureEngine(path)
        try:
            assert batch == pure.check_by_card_batch(keys, 18000)
            assert single == pure.check_by_card_batch(keys, 18600)
        finally:
            pure.close()
    finally:
        stop.set()
        native.close()


def test_batches_stay_right_after_the_writer_moves_pages(tmp_path):
    """Batches prefetch from a directory of leaf pages built on first use; a writer
    rewriting persons moves their pages (copy-on-write), so the directory goes
    stale. It is only a hint: answers must not change."""
    path = str(tmp_path / "store")
    write_persons(path, 0, 400)
    native = NativeEngine(path)
    try:
        keys = [serial(i) for i in range(420)]
        numbers = number_queries(400)
        before = native.check_by_card_batch(keys, 18600)  # builds the directories
        native.check_by_number_batch(numbers, 18600)
        stats = native._directory_stats()
        assert {name: stats[name][0] for name in stats} == {"card": "ready", "number": "ready", "history": "ready"}
        assert stats["card"][3] == 0 and stats["history"][3] == 0  # a fresh directory predicts every page
        writer = run_writer(path, 0, 400, name_pad=30, rewrite=True)
        writer.stdin.write("\n" * 400)
        writer.stdin.close()
        assert writer.wait(120) == 0
        for _ in range(3):  # enough walks to judge the directory and rebuild it
            after = native.check_by_card_batch(keys, 18600)
            assert after == [native.check_by_card(k, 18600) for k in keys]
            assert native.check_by_number_batch(numbers, 18600) == [
                native.check_by_number(k, b, 18600) for k, b in numbers
            ]
        assert after != before  # the longer names are there
    finally:
        native.close()
    pure = PureEngine(path)
    try:
        assert pure.check_by_card_batch(keys, 18600) == after
    finally:
        pure.close()


# --- corrupt records ---------------------------------------------------------------


@pytest.mark.parametrize("damage", ["short", "version", "entries", "payload"])
def test_corrupt_record_raises_and_engine_survives(tmp_path, damage):
    path = str(tmp_path / "store")
    write_persons(path, 0, 3)
    pure = PureEngine(path)
    good = pure.history_by_link(1)
    pure.close()
    bad = {
        "short": good[:5],
        "version": b"\x07\x00" + good[2:],
        "entries": good[:2] + b"\xff\x00" + good[4:],  # 255 entries declared
        "payload": good[: history.HEADER.size + 16] + (10**6).to_bytes(4, "little") + good[history.HEADER.size + 20 :],
    }[damage]
    with lmdb.open(path, max_dbs=32) as env:
        db = env.open_db(b"history")
        with env.begin(write=True) as txn:
            txn.put(link_key(1), bad, db=db)
    native = NativeEngine(path)
    try:
        with pytest.raises(ValueError, match="corrupt history record"):
            native.check_by_card(serial(0), 18000)
        with pytest.raises(ValueError, match="corrupt history record"):
            native.check_by_card_batch([serial(1), serial(0)], 18000)
        with pytest.raises(ValueError, match="corrupt history record"):
            native.check_by_number(number_keys(0)[0], birth_day(0), 18000)
        # the raw record is still handed out as stored (the claims parser judges it)
        assert native.history_by_link(1) == bad
        # the transaction went back to the pool: other persons still answer
        assert epb.CheckResponse.FromString(native.check_by_card(serial(1), 18600)).validity == epb.VALIDITY_VALID
    finally:
        native.close()


# --- leaks -------------------------------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_no_leak_over_200k_checks(engines):
    native, _ = engines
    key = serial(1)
    numbers = number_queries(30)
    batch = [serial(i) for i in range(100)]

    def run(rounds: int):
        for _ in range(rounds):
            native.check_by_card(key, 18600)
            native.check_by_number(numbers[0][0], numbers[0][1], 18600)
        for _ in range(rounds // 100):
            native.check_by_card_batch(batch, 18000)
            native.check_by_number_batch(numbers, 18000)
            native.histories_by_number([k for k, _ in numbers[:10]])

    run(20_000)  # warm the allocator and the pool
    refs = sys.getrefcount(key)
    answer = native.check_by_card(key, 18600)
    before = _rss_kib()
    run(100_000)  # 200k single checks, 2k batches
    grown = _rss_kib() - before
    assert sys.getrefcount(key) == refs
    assert sys.getrefcount(answer) == 2  # ours and getrefcount's argument
    assert grown < 4096, f"RSS grew by {grown} KiB over 200k checks"


if __name__ == "__main__":  # the writer process of the live-writer tests
    _path, _first, _count, _map, _pad, _mode = sys.argv[1:7]
    _writer = Writer(_path, map_size=int(_map))
    for _i in range(int(_first), int(_first) + int(_count)):
        if not sys.stdin.readline():
            break
        (rewrite_person if _mode == "rewrite" else write_person)(_writer, _i, int(_pad))
        print(f"committed {_i}", flush=True)
    _writer.close()
