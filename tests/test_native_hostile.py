"""Every native entry point (src/ext) under hostile use: empty, huge, negative and
wrongly typed arguments, items that change when read twice, keys freed by their
iterator, a damaged lock, close() racing a remap. Each must raise an ordinary
Python exception (IndexError, ValueError, TypeError, ...) or answer as its
pure-Python twin does; never read or write past a buffer, never crash.

The same module runs again in a subprocess against the ASan/UBSan build
(test_hostile_use_under_asan_and_ubsan at the end), so an overrun that happens
to land in mapped memory is reported too.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import sys
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onshi.core import cardproof, history
from onshi.core.pure import PureEngine
from onshi.v1 import claims_pb2 as cpb
from tests import sanitized
from tests.conftest import require_native

require_native()

from onshi.ext import _auditlog, _cardproof, _claims, _engine, _record  # noqa: E402
from tests.test_native import birth_day, number_keys, serial, write_persons  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANITIZED = os.environ.get("ONSHI_SANITIZED") == "1"
# What a hostile argument may raise; anything else (SystemError, a crash) is a bug.
ORDINARY = (TypeError, ValueError, IndexError, OverflowError, KeyError, RuntimeError, OSError, MemoryError)
FUZZ = settings(
    max_examples=60 if SANITIZED else 200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def ordinary(call, *args, **kwargs):
    """The call's result, or None if it raised an ordinary exception."""
    try:
        return call(*args, **kwargs)
    except ORDINARY:
        return None


# Arguments of the wrong kind, or of the right kind at its extremes.
hostile = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 1, 2**31, -(2**31) - 1, 2**63, -(2**63), 2**64, 10**30]),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=40),
    st.lists(st.binary(max_size=8), max_size=3),
    st.tuples(st.binary(max_size=8), st.integers()),
    st.builds(object),
    st.dictionaries(st.binary(max_size=3), st.binary(max_size=3), max_size=2),
)
indices = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-1, 0, 1, 10**6, 2**62, -(2**63)]))


def mutations(seed: bytes):
    """seed cut, extended, or with bytes overwritten: framing that lies about itself."""

    def mutate(args):
        cut, at, junk = args
        data = bytearray(seed[:cut] if cut < len(seed) else seed + junk)
        for i, b in enumerate(junk[:4]):
            if data:
                data[(at + i) % len(data)] = b
        return bytes(data)

    return st.tuples(st.integers(0, len(seed) + 8), st.integers(0, 1 << 16), st.binary(max_size=12)).map(mutate)


# --- engine ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("hostile") / "store")
    write_persons(path, 0, 40)
    return path


@pytest.fixture(scope="module")
def engines(store):
    pure = PureEngine(store)  # first: one env per store per process (see tests/test_native.py)
    native = _engine.NativeEngine(store)
    yield native, pure
    native.close()
    pure.close()


def test_close_during_a_remap_while_threads_check(tmp_path):
    """close() used to find no check counted while a thread waited (GIL released)
    inside the remap of a grown map, unmap the store, and let that thread hand
    LMDB a NULL environment: a segfault. Stores whose map the writer grows while
    four threads check, closed at once: bounded in iterations, in a subprocess so
    a crash is a failure, not the end of the run."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_native_hostile", "close-race", str(tmp_path), "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    words = done.stdout.split()
    assert words[:2] == ["ok", "20"], done.stdout
    assert int(words[3]) >= 1, "no close overlapped a remap: the race was not exercised"


def close_race(root: str, iterations: int) -> None:
    """The stress of test_close_during_a_remap_while_threads_check (run as __main__)."""
    paths = []
    for it in range(iterations):
        paths.append(os.path.join(root, f"s{it}"))
        write_persons(paths[-1], 0, 30, map_size=64 * 1024)
    grower = subprocess.Popen(
        [sys.executable, "-m", "tests.test_native_hostile", "grow"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    keys = [serial(i % 40) for i in range(20_000)]
    remapped = 0
    for path in paths:
        native = _engine.NativeEngine(path)
        native.check_by_card_batch(keys[:10], 18000)
        errors: list[BaseException] = []
        started = threading.Barrier(5)

        def hammer(native=native, errors=errors, started=started):
            started.wait()
            while True:
                try:
                    native.check_by_card_batch(keys, 18000)
                    native.check_by_card(keys[1], 18000)
                except ValueError as exc:  # "closed" is the only acceptable failure
                    if "closed" not in str(exc):
                        errors.append(exc)
                    return
                except BaseException as exc:  # noqa: BLE001 - any failure in the thread is reported below
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        started.wait()
        grower.stdin.write(path + "\n")  # the writer grows the map past the engine's
        grower.stdin.flush()
        assert grower.stdout.readline().strip() == "grown"
        native.close()  # while threads hit MDB_MAP_RESIZED and remap
        for t in threads:
            t.join(60)
        assert not errors, errors
        remapped += native.remaps > 0
    grower.stdin.close()
    assert grower.wait(60) == 0
    print("ok", iterations, "remapped", remapped, flush=True)


def grow_stores() -> None:
    from onshi.core.writer import Writer

    for line in sys.stdin:
        writer = Writer(line.strip(), map_size=64 * 1024)
        writer.apply(lambda txn: txn.put("meta", b"pad", b"x" * 300_000))  # several times the old map
        writer.close()
        print("grown", flush=True)


class FreshKey:
    """A (number key, birth) query whose key is a new bytes object each time it is
    unpacked: only the batch's own reference keeps it alive."""

    def __init__(self, key: bytes, birth: int):
        self.key, self.birth = key, birth

    def __iter__(self):
        yield bytes(bytearray(self.key))
        yield self.birth


def test_batch_keeps_the_keys_its_items_make_alive(engines):
    """The batch pointed into each key object while the GIL was released, but
    held only the last one: earlier keys were freed and their memory reused by
    the next, so queries answered for the wrong person."""
    native, pure = engines
    queries = [(number_keys(i)[0], birth_day(i)) for i in range(40)]
    for day in (16000, 18600):
        assert native.check_by_number_batch([FreshKey(k, b) for k, b in queries], day) == pure.check_by_number_batch(
            queries, day
        )
    fresh_cards = (bytes(bytearray(serial(i))) for i in range(40))  # a generator: nothing else holds them
    assert native.check_by_card_batch(fresh_cards, 18600) == pure.check_by_card_batch(
        [serial(i) for i in range(40)], 18600
    )


def test_the_engine_a_server_loads_has_every_technique_and_no_switch():
    """The batch techniques are left out only in a variant build for the bench
    (setup.py, ONSHI_ENGINE_VARIANT); the built module has no way to turn them off."""
    assert _engine.variant() == ""
    assert not any(name.startswith("_tune") or "knob" in name for name in dir(_engine))


def test_an_engine_is_initialised_once(engines, store):
    native, _ = engines
    with pytest.raises(RuntimeError):
        native.__init__(store)
    assert not native.closed


@FUZZ
@given(
    key=st.one_of(st.binary(max_size=64), hostile),
    day=st.one_of(indices, hostile),
    birth=st.one_of(indices, hostile),
    link=st.one_of(indices, hostile),
    batch=st.lists(
        st.one_of(st.binary(min_size=1, max_size=24), st.tuples(st.binary(max_size=24), indices), hostile), max_size=6
    ),
)
def test_engine_entry_points_take_hostile_arguments(engines, key, day, birth, link, batch):
    native, pure = engines
    answer = ordinary(native.check_by_card, key, day)
    if answer is not None:
        assert answer == pure.check_by_card(key, day)
    ordinary(native.check_by_number, key, birth, day)
    ordinary(native.check_by_card_batch, batch, day)
    ordinary(native.check_by_number_batch, batch, day)
    ordinary(native.histories_by_number, batch)
    raw = ordinary(native.history_by_link, link)
    assert raw is None or history.parse_history(raw)
    ordinary(native.check_by_card_batch, key, day)  # a bytes object iterates as ints
    ordinary(_engine.NativeEngine, key)
    assert native.check_by_card(serial(3), 18600) == pure.check_by_card(serial(3), 18600)


# --- claims pass -------------------------------------------------------------------


def plain_claim(claim_id: str, number: str = "9") -> cpb.Claim:
    from tests.claims_helpers import FACILITY, KUMIAI

    c = cpb.Claim(
        claim_id=claim_id,
        facility_code=FACILITY,
        insurer_number=KUMIAI,
        symbol="A",
        number=number,
        branch="1",
        points=12,
    )
    c.birth_date.CopyFrom(type(c.birth_date)(year=1980, month=6, day=6))
    c.first_visit_date.CopyFrom(type(c.birth_date)(year=2024, month=4, day=3))
    c.last_visit_date.CopyFrom(type(c.birth_date)(year=2024, month=4, day=9))
    return c


def request(*claims) -> bytes:
    return cpb.VerifyClaimsRequest(claims=list(claims)).SerializeToString()


def test_claim_indices_out_of_range_raise():
    """parse(b'', {}).days(10**6) read past the (empty) claim array: a segfault."""
    for batch in (_claims.parse(b"", {}), _claims.Batch(), _claims.parse(request(plain_claim("a")), {})):
        for i in (len(batch), 10**6, -1, -(2**63), 2**63 - 1):
            with pytest.raises(IndexError):
                batch.days(i)
    assert _claims.parse(request(plain_claim("a")), {}).days(0)[0] == (dt.date(1980, 6, 6) - dt.date(1970, 1, 1)).days
    made = _claims.Batch()  # nothing parsed: no claims, no keys
    assert len(made) == 0 and made.keys == [] and made.settle([]) == [] and made.response([]) == b""
    for bad in ([(0, b"x")], [(-1, b"x")]):
        with pytest.raises(ValueError):
            made.response(bad)
    for call in (lambda: _claims.parse(None, {}), lambda: _claims.parse(b"", None), lambda: _claims.split(None, 2)):
        with pytest.raises(TypeError):
            call()


def test_settle_uses_the_keys_it_parsed_and_settles_afresh():
    batch = _claims.parse(request(plain_claim("a")), {})
    batch.keys.clear()  # a caller's list: changing it must not change what settle reads
    with pytest.raises(ValueError):
        batch.settle([])
    tail = cpb.Verdict(outcome=cpb.OUTCOME_RETURN, return_reason=cpb.RETURN_REASON_NUMBER_NOT_FOUND)
    assert batch.settle([None], tail.SerializeToString()) == []  # answered natively: nobody holds it
    assert batch.settle([None]) == [(0, 0)]  # now Python's to decide: the not-found answer is gone
    spliced = cpb.Verdict(claim_id="a", outcome=cpb.OUTCOME_UNRESOLVED).SerializeToString()
    assert (
        cpb.VerifyClaimsResponse.FromString(batch.response([(0, spliced)])).verdicts[0].outcome
        == cpb.OUTCOME_UNRESOLVED
    )
    # not spliced: the response falls back to OK, and never to the stale tail (which
    # it used to size from None)
    assert cpb.VerifyClaimsResponse.FromString(batch.response([])).verdicts[0].outcome == cpb.OUTCOME_OK


class Flaky:
    """A spliced pair whose index reads 0 the first time and 1 afterwards."""

    def __init__(self, body: bytes):
        self.body, self.reads = body, 0

    def __len__(self):
        return 2

    def __getitem__(self, k):
        if k == 1:
            return self.body
        if k == 0:
            self.reads += 1
            return 0 if self.reads == 1 else 1
        raise IndexError(k)


def test_response_reads_each_spliced_pair_once():
    """Sized with the pair read once and written with it read again, a response
    overran its buffer by the difference (claim IDs of different lengths)."""
    batch = _claims.parse(request(plain_claim("x" * 200), plain_claim("y")), {})
    body = cpb.Verdict(claim_id="x" * 200, outcome=cpb.OUTCOME_UNRESOLVED).SerializeToString()
    verdicts = cpb.VerifyClaimsResponse.FromString(batch.response([Flaky(body)])).verdicts
    assert [(v.claim_id[:1], v.outcome) for v in verdicts] == [("x", cpb.OUTCOME_UNRESOLVED), ("y", cpb.OUTCOME_OK)]
    for bad in ([(1, body), (0, body)], [(0, body), (0, body)], [(2, body)], [(0, "text")]):
        with pytest.raises((ValueError, TypeError)):
            batch.response(bad)


@pytest.mark.parametrize("share", [math.nan, -math.inf, math.inf, -0.0, 1e308])
def test_split_takes_any_share(share):
    raw = request(*(plain_claim(f"c{i}") for i in range(7)))
    pieces, n = _claims.split(raw, 3, share)
    assert n == 7 and b"".join(p for p, _ in pieces) == raw
    assert all(0 <= base <= n for _, base in pieces)


@FUZZ
@given(
    raw=st.one_of(st.binary(max_size=80), mutations(request(plain_claim("a"), plain_claim("b", "77")))),
    symbols=st.one_of(
        st.dictionaries(st.binary(max_size=4), st.one_of(st.binary(max_size=90), hostile), max_size=2), hostile
    ),
    facility=st.one_of(st.none(), st.binary(max_size=12), hostile),
    i=indices,
    values=st.lists(st.one_of(st.none(), st.binary(max_size=40), hostile), max_size=4),
    spliced=st.lists(st.one_of(st.tuples(indices, st.binary(max_size=20)), hostile), max_size=3),
    recorded=st.lists(
        st.one_of(st.tuples(indices, st.binary(max_size=4), st.binary(max_size=4), st.binary(max_size=4)), hostile),
        max_size=3,
    ),
    parts=st.one_of(indices, hostile),
    share=st.one_of(st.floats(allow_nan=True), hostile),
)
def test_claims_entry_points_take_hostile_arguments(raw, symbols, facility, i, values, spliced, recorded, parts, share):
    batch = ordinary(_claims.parse, raw, symbols, facility)
    for b in (batch, _claims.Batch()):
        if b is None:
            continue
        len(b), b.plain_indices(), b.other_indices()
        ordinary(b.plain_outcomes, i, i)
        ordinary(b.days, i)
        ordinary(b.settle, values, facility)
        ordinary(b.settle, values[: len(b.keys)], facility)
        response = ordinary(b.response, spliced)
        if response is not None:
            cpb.VerifyClaimsResponse.FromString(response)
        ordinary(b.ledger, recorded)
    pieces = ordinary(_claims.split, raw, parts, share)
    if pieces is not None:
        assert b"".join(p for p, _ in pieces[0]) == raw


# --- the writer's record work --------------------------------------------------------


class Swapping:
    """A day that, when converted, swaps the caller's next entry for one with a
    much longer body (its conversion runs Python code in the second pass)."""

    def __init__(self, entries: list, day: int):
        self.entries, self.day = entries, day

    def __int__(self):
        self.entries[1] = (18000, 2**31 - 1, 8, 0, 0, b"", b"\x12\x01y" * 400)
        return self.day


def test_join_record_sizes_and_fills_from_the_same_entries():
    """The record was sized in one pass over the caller's list and filled in a
    second: an entry replaced in between was copied past the end of the record."""
    entries = [(0, 2**31 - 1, 7, 0, 0, b"", b"\x12\x01x"), (18000, 2**31 - 1, 8, 0, 0, b"", b"\x12\x01z")]
    entries[0] = (Swapping(entries, 17000), *entries[0][1:])
    birth, views = _record.split_record(_record.join_record(100, entries))
    assert birth == 100 and [v[6] for v in views] == [b"\x12\x01x", b"\x12\x01z"]
    for bad in (
        [(1, 2)],
        [(1, 2, 3, 4, 5, b"", b"x", 8)],
        [(1, 2, 3, 4, 5, b"", "text")],
        [None],
        [[1, 2, 3, 4, 5, b"", b"x"]],
        [(2**40, 0, 0, 0, 0, b"", b"")],
        [(0, 0, -1, 0, 0, b"", b"")],
        [(0, 0, 2**64, 0, 0, b"", b"")],
    ):
        with pytest.raises((ValueError, TypeError, OverflowError)):
            _record.join_record(0, bad)


def sample_record() -> bytes:
    return _record.join_record(
        9000, [(18000, 19000, 5, 0, 0, b"ab", b"\x12\x0201"), (19000, 2**31 - 1, 6, 0, 0, b"ab", b"")]
    )


entry = st.tuples(indices, indices, indices, indices, indices, st.binary(max_size=12), st.binary(max_size=20))


@FUZZ
@given(
    value=st.one_of(st.binary(max_size=80), mutations(sample_record()), hostile),
    body=st.one_of(st.binary(max_size=40), mutations(b"\x12\x0201\x22\x01A\x2a\x019\x32\x0200"), hostile),
    birth=st.one_of(indices, hostile),
    entries=st.one_of(st.lists(st.one_of(entry, hostile), max_size=3), hostile),
)
def test_record_entry_points_take_hostile_arguments(value, body, birth, entries):
    split = ordinary(_record.split_record, value)
    assert split is None or isinstance(split[0], int)
    fields = ordinary(_record.number_fields, body)
    assert fields is None or all(isinstance(f, str) for f in fields)
    record = ordinary(_record.join_record, birth, entries)
    if record is not None:
        assert len(_record.split_record(record)[1]) == len(entries)
    ordinary(_record.number_hash, value)


# --- card proofs -----------------------------------------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    size = (
        bytes((n,))
        if n < 0x80
        else bytes((0x80 | (n.bit_length() + 7) // 8,)) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return bytes((tag,)) + size + body


def _int(v: int) -> bytes:
    return _der(0x02, v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True))


RSA_ALGORITHM = _der(0x30, bytes.fromhex("06092a864886f70d010101") + b"\x05\x00")


def spki(n: int, e: int, algorithm: bytes = RSA_ALGORITHM) -> bytes:
    """A SubjectPublicKeyInfo made by hand: cryptography refuses to build bad keys."""
    return _der(0x30, algorithm + _der(0x03, b"\x00" + _der(0x30, _int(n) + _int(e))))


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
N = KEY.public_key().public_numbers().n


def test_hand_made_spki_is_the_real_encoding():
    assert spki(N, 65537) == KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("e", ["1", "0", "2", "4", "65536", "N - 1", "N", "N + 2", "-3", "-65537"])
def test_unusable_rsa_exponents_are_refused(e):
    """With e = 1, s^e mod n = s: the expected PKCS#1 block itself would pass as
    the signature of any message. Even, too small or too large exponents are no
    RSA key either; a negative one was read as its two's complement bytes."""
    with pytest.raises(ValueError):
        _cardproof.RsaPublicKey(spki(N, eval(e, {"N": N})))


def test_exponent_one_would_accept_the_expected_block_as_a_signature():
    """What the refusal above prevents, shown with the reference arithmetic."""
    import hashlib

    message = b"onshi/v1/card-proof\n1310000001\n1700000000\n00"
    k = (N.bit_length() + 7) // 8
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(message).digest()
    em = b"\x00\x01" + b"\xff" * (k - 3 - len(digest_info)) + b"\x00" + digest_info
    assert pow(int.from_bytes(em, "big"), 1, N).to_bytes(k, "big") == em  # s^1 = s: a forgery
    for e in (3, 65537):
        assert _cardproof.RsaPublicKey(spki(N, e)).verify_pkcs1v15_sha256(em, message) is False


def test_key_bytes_must_be_the_key_they_name():
    for der in (
        spki(N, 65537) + b"\x00",
        spki(-N, 65537),
        spki(N, 65537)[:-1],
        spki(N, 65537, _der(0x30, bytes.fromhex("06092a864886f70d01010a") + b"\x30\x00")),  # RSA-PSS
        spki(N, 65537, _der(0x30, bytes.fromhex("06092a864886f70d010101"))),
    ):  # parameters absent
        with pytest.raises(ValueError):
            _cardproof.RsaPublicKey(der)
    assert _cardproof.RsaPublicKey(spki(N, 3)) is not None


@pytest.mark.parametrize("slots", [2**63, 2**64 - 1, (2**64 - 64) // 24 + 1, 2**62 + 5])
def test_a_nonce_table_whose_size_overflows_is_refused(slots):
    """64 + slots * 24 wrapped around: a tiny mapping with 2^63 slots behind it."""
    with pytest.raises(ValueError, match="does not fit"):
        _cardproof.NonceTable(slots, 32)


def test_a_damaged_replay_lock_refuses_the_proof():
    """A lock error other than EBUSY/EOWNERDEAD was ignored and the table written
    unlocked; now it refuses (fail closed) with a status of its own."""
    from onshi.server import trust_status
    from tests.test_trust_cardproof import verifier
    from tests.trust_helpers import FACILITY, proof_fields

    table = cardproof.SharedReplayCache(300, slots=64, kind="native")
    assert table.add(os.urandom(16), time.time())
    table._native._scribble_lock()
    with pytest.raises(OSError):
        table.add(os.urandom(16), time.time())
    f = proof_fields("valid-1")
    ch = f["challenge"]
    with pytest.raises(cardproof.CardProofError) as info:
        verifier(replays=table).verify(
            f["card_certificate"],
            ch.facility_code,
            ch.timestamp_unix,
            ch.nonce,
            f["card_signature"],
            FACILITY,
            purpose=cardproof.PURPOSE_CHECK_BY_CARD,
        )
    assert info.value.reason == "CARD_PROOF_UNAVAILABLE"
    assert trust_status.card_proof_status(info.value).code.name == "UNAVAILABLE"


def jpki_ca() -> x509.Certificate:
    from tests.trust_helpers import pki_dir

    with open(os.path.join(pki_dir(), "jpki", "ca.pem"), "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def card_certificate(kind: str) -> tuple[bytes, object]:
    """A card certificate the test JPKI CA signs, whose key is not a PKCS#1 RSA key."""
    from tests.trust_helpers import pki_dir

    base = os.path.join(pki_dir(), "jpki")
    ca = jpki_ca()
    with open(os.path.join(base, "ca.key.pem"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kind)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(0x4242)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    edits = {  # same lengths, so only the TBS is re-signed
        "rsa-pss": (bytes.fromhex("300d06092a864886f70d0101010500"), bytes.fromhex("300d06092a864886f70d01010a3000")),
        "even-exponent": (bytes.fromhex("0203010001"), bytes.fromhex("0203010000")),
    }
    if kind in edits:
        old, new = edits[kind]
        tbs = cert.tbs_certificate_bytes
        assert tbs.count(old) == 1
        edited = tbs.replace(old, new)
        der = der.replace(tbs, edited).replace(cert.signature, ca_key.sign(edited, padding.PKCS1v15(), hashes.SHA256()))
    return der, key


@pytest.mark.parametrize("kind", ["rsa-pss", "even-exponent", "ec"])
def test_card_keys_that_are_not_pkcs1_rsa_are_card_proof_refusals(kind):
    """An RSA-PSS key (cryptography loads it as a plain RSA key, so the proof used
    to pass), a key the parsers refuse (ValueError: INTERNAL at the server) and
    an EC key are all the same refusal: an untrusted card certificate."""
    from onshi.server import trust_status
    from tests.test_trust_cardproof import verifier
    from tests.trust_helpers import FACILITY

    der, key = card_certificate(kind)
    x509.load_der_x509_certificate(der).verify_directly_issued_by(jpki_ca())  # the chain is good
    now, nonce = int(time.time()), os.urandom(16)
    purpose = cardproof.PURPOSE_CHECK_BY_CARD
    signature = cardproof.sign_challenge(key, purpose, FACILITY, now, nonce) if kind != "ec" else b"\x01" * 64
    with pytest.raises(cardproof.CardProofError) as info:
        verifier().verify(der, FACILITY, now, nonce, signature, FACILITY, purpose=purpose)
    assert info.value.reason == "CARD_CERTIFICATE_UNTRUSTED" and "key" in str(info.value)
    assert trust_status.card_proof_status(info.value).code.name == "UNAUTHENTICATED"


@FUZZ
@given(
    der=st.one_of(st.binary(max_size=80), mutations(spki(N, 65537)), hostile),
    signature=st.one_of(st.binary(max_size=300), st.binary(min_size=256, max_size=256), hostile),
    message=st.one_of(st.binary(max_size=40), hostile),
    slots=st.one_of(st.integers(-5, 200), st.integers(2**60, 2**64 + 5), hostile),
    probe=st.one_of(st.integers(-2, 70), hostile),
    digest=st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=40), hostile),
    now=st.one_of(st.floats(allow_nan=True), hostile),
)
def test_card_proof_entry_points_take_hostile_arguments(der, signature, message, slots, probe, digest, now):
    key = ordinary(_cardproof.RsaPublicKey, der)
    if key is not None:
        ordinary(key.verify_pkcs1v15_sha256, signature, message)
    good = _cardproof.RsaPublicKey(spki(N, 65537))
    result = ordinary(good.verify_pkcs1v15_sha256, signature, message)
    assert result in (None, False)  # no signature of ours among them
    table = ordinary(_cardproof.NonceTable, slots, probe)
    if table is not None:
        assert ordinary(table.add, digest, now, now) in (None, -1, 0, 1)


# --- the access log's group commit ------------------------------------------------------


def group_commit(tmp_path, **changes):
    fd = os.open(tmp_path / "segment", os.O_RDWR | os.O_CREAT, 0o600)
    head = os.open(tmp_path / "head", os.O_RDWR | os.O_CREAT, 0o600)
    args = dict(
        fd=fd,
        head_fd=head,
        size=0,
        allocated=0,
        seq=1,
        total=0,
        last_hash=bytes(32),
        durable=False,
        segment_bytes=1 << 20,
        preallocate=4096,
    )
    args.update(changes)
    return _auditlog.GroupCommit(*args.values())


def test_group_commit_refuses_what_would_make_it_spin_or_overrun(tmp_path):
    with pytest.raises(RuntimeError):  # not initialised: no zero buffer, fd 0
        _auditlog.GroupCommit.__new__(_auditlog.GroupCommit).append([b"x"])
    for bad in (
        dict(preallocate=0),
        dict(preallocate=-1),
        dict(segment_bytes=0),
        dict(size=-1),
        dict(size=10, allocated=5),
        dict(last_hash=b"short"),
    ):
        with pytest.raises(ValueError):  # preallocate 0: the zero-fill loop never advanced
            group_commit(tmp_path, **bad)
    core = group_commit(tmp_path)
    with pytest.raises(AttributeError):  # the zero buffer's size is not the caller's to change
        core.preallocate = 1 << 30
    with pytest.raises(AttributeError):
        core.size = -5
    with pytest.raises(RuntimeError):
        core.__init__(0, 0, 0, 0, 0, 0, bytes(32), False, 1, 1)
    for hand_over in (lambda: core.rotated(5, 0, 0, 2, 0, bytes(32)), lambda: core.fail(5)):
        with pytest.raises(RuntimeError, match="no rotation"):  # only the caller told to rotate may
            hand_over()
    assert core.append([b"record"]) == _auditlog.DURABLE
    with pytest.raises(TypeError):
        core.append([b"x", "text"])
    assert core.failed == 0 and core.records == 1
    core.close()


@FUZZ
@given(
    bodies=st.one_of(st.lists(st.one_of(st.binary(max_size=64), hostile), max_size=4), hostile),
    numbers=st.lists(st.one_of(indices, hostile), min_size=6, max_size=6),
    last_hash=st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40), hostile),
)
def test_group_commit_entry_points_take_hostile_arguments(tmp_path_factory, bodies, numbers, last_hash):
    tmp = tmp_path_factory.mktemp("gc")
    size, allocated, seq, total, segment_bytes, preallocate = numbers
    if isinstance(preallocate, int) and preallocate > 1 << 16:
        preallocate = 1 << 16  # a real buffer of that size is allocated
    core = ordinary(
        group_commit,
        tmp,
        size=size,
        allocated=allocated,
        seq=seq,
        total=total,
        last_hash=last_hash,
        segment_bytes=segment_bytes,
        preallocate=preallocate,
    )
    if core is None:
        core = group_commit(tmp)
    ordinary(core.append, bodies)
    ordinary(core.rotated, 5, size, allocated, seq, total, last_hash)
    ordinary(core.fail, seq)
    core.close()
    assert ordinary(core.append, [b"x"]) is None  # closed


# --- all of it under ASan/UBSan -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(SANITIZED, reason="already the sanitized run")
@pytest.mark.skipif(sanitized.available() is not None, reason=str(sanitized.available()))
def test_hostile_use_under_asan_and_ubsan(tmp_path):
    """This module and the native modules' own tests, again with the extensions
    built with -fsanitize=address,undefined (setup.py ONSHI_DEBUG_BUILD=1) and
    libasan preloaded: an overrun or undefined behaviour fails the run even where
    the normal build reads memory that happens to be mapped."""
    env = sanitized.sanitized_env(str(tmp_path / "tree"))
    tests = [
        "tests/test_native_hostile.py",
        "tests/test_claims_native.py",
        "tests/test_record_native.py",
        "tests/test_cardproof_native.py",
        "tests/test_audit_native.py",
        "tests/test_native.py",
        "-k",
        "not leak",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, (done.returncode, done.stdout[-4000:], done.stderr[-6000:])
    assert " passed" in done.stdout


@pytest.mark.skipif(not SANITIZED, reason="only in the sanitized run")
def test_the_sanitized_build_is_the_one_loaded():
    for module in (_record, _auditlog, _cardproof, _claims, _engine):
        assert not module.__file__.startswith(os.path.join(ROOT, "src")), module.__file__


if __name__ == "__main__":  # the subprocesses of the close/remap stress
    if sys.argv[1] == "close-race":
        close_race(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "grow":
        grow_stores()
