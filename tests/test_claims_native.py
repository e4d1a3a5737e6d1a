"""Differential test of the plain claims' native pass (onshi.ext._claims): for
generated batches, Verifier.verify_serialized with the native pass and without it
(Python's rules, the reference) return byte-identical responses, the same ledger
and the same errors — including claims the native pass must hand back to Python
(full-width or kanji fields, 不詳, impossible dates, repeated wire fields)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onshi.core import claims as rules
from onshi.core import twins
from onshi.core.pure import PureEngine
from onshi.v1 import claims_pb2 as cpb
from tests.claims_helpers import (
    ELDERLY,
    FACILITY,
    KUMIAI,
    KYOKAI,
    NHI,
    OTHER_FACILITY,
    SEAMEN,
    person,
    qual,
    write_people,
)
from tests.conftest import require_native

require_native("_claims")
_claims = twins.load("_claims", "native")

D = dt.date
# (insurer, symbol, number, branch, acquired, lost) per person; births below
PEOPLE = [
    (
        D(1980, 6, 6),
        [(KYOKAI, "12", "777", "00", D(2020, 1, 1), D(2024, 4, 1)), (KUMIAI, "A", "9", "01", D(2024, 4, 1), None)],
    ),
    (
        D(1950, 1, 1),
        [(SEAMEN, "本省1", "55", "00", D(2019, 1, 1), None), (ELDERLY, "", "12345678", "", D(2024, 1, 15), None)],
    ),
    (D(1990, 2, 2), [(NHI, "国", "1-2", "00", D(2024, 4, 20), None)]),
    (D(1975, 3, 3), [(KYOKAI, "X9", "31", "2", D(2024, 4, 10), D(2024, 4, 15))]),
    # the longest symbol, 4 UTF-8 bytes a character: the native key buffer's worst case
    (D(1966, 6, 6), [(KUMIAI, "\U0002000b" * 20, "8" * 20, "99", D(2024, 1, 1), None)]),
]
FULL_WIDTH = str.maketrans("0123456789AX", "０１２３４５６７８９ＡＸ")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("native-claims")
    write_people(
        path, [(person(f"カナ{i}", birth), [qual(*q) for q in quals]) for i, (birth, quals) in enumerate(PEOPLE)]
    )
    engine = PureEngine(path)
    yield engine
    engine.close()


def verifiers(engine):
    native = rules.Verifier(engine, engine.env, kind="native")
    python = rules.Verifier(engine, engine.env, kind="pure")
    return native, python


def _date(draw, month_base: D):
    kind = draw(st.sampled_from(("ok",) * 8 + ("month13", "day33", "feb30", "year0", "missing")))
    d = month_base.replace(day=draw(st.integers(1, 28)))
    if kind == "ok":
        return cpb.Claim().first_visit_date.__class__(year=d.year, month=d.month, day=d.day)
    date = cpb.Claim().first_visit_date.__class__
    return {
        "month13": date(year=2024, month=13, day=1),
        "day33": date(year=2024, month=3, day=33),
        "feb30": date(year=2024, month=2, day=30),
        "year0": date(year=0, month=4, day=1),
        "missing": date(),
    }[kind]


@st.composite
def claims(draw, i: int):
    birth, quals = draw(st.sampled_from(PEOPLE))
    insurer, symbol, number, branch, _, _ = draw(st.sampled_from(quals))
    roll = draw(st.integers(0, 19))
    if roll == 0:
        insurer = insurer.translate(FULL_WIDTH)
    elif roll == 1:
        insurer = insurer[:-1] + str((int(insurer[-1]) + 1) % 10)  # wrong check digit
    elif roll == 2:
        insurer, symbol, number, branch = "77777777", "", "777777777", ""
    if draw(st.integers(0, 9)) == 0:
        symbol = draw(st.sampled_from((symbol.translate(FULL_WIDTH), "S" * 21, "本" * 21, " A", "a b")))
    if draw(st.integers(0, 9)) == 0:
        number = draw(st.sampled_from((number.translate(FULL_WIDTH), "", "1" * 21, "999" + number, "1\x7f")))
    if draw(st.integers(0, 9)) == 0:
        branch = draw(st.sampled_from(("", "0", "1", "001", "1a", "０1")))
    month = draw(st.sampled_from((D(2024, 4, 1), D(2024, 3, 1), D(2024, 1, 1), D(2023, 12, 1))))
    first = draw(st.integers(1, 28))
    last = draw(st.integers(first, min(30, first + 14)))
    c = cpb.Claim(
        claim_id=draw(st.sampled_from((f"c{i}", f"c{i}", "dup", ""))),
        facility_code=draw(st.sampled_from((FACILITY, FACILITY, OTHER_FACILITY))),
        insurer_number=insurer,
        symbol=symbol,
        number=number,
        branch=branch,
        kind=cpb.CLAIM_KIND_MEDICAL,
        points=draw(st.integers(-5, 20_000)),
        high_cost=draw(st.integers(0, 9)) == 0,
    )
    b = birth if draw(st.integers(0, 9)) else birth + dt.timedelta(days=1)
    c.birth_date.CopyFrom(type(c.birth_date)(year=b.year, month=b.month, day=b.day))
    c.first_visit_date.CopyFrom(type(c.birth_date)(year=month.year, month=month.month, day=first))
    c.last_visit_date.CopyFrom(type(c.birth_date)(year=month.year, month=month.month, day=last))
    if draw(st.integers(0, 9)) == 0:
        c.first_visit_date.CopyFrom(_date(draw, month))
    if draw(st.integers(0, 9)) == 0:
        c.last_visit_date.CopyFrom(_date(draw, D(2024, 5, 1)))
    if draw(st.integers(0, 9)) == 0:
        c.visit_days.extend(draw(st.lists(st.integers(first, last), max_size=3)))
    if draw(st.integers(0, 19)) == 0:
        c.public_expense_numbers.append("12345675")
    if insurer == "77777777":
        c.declaration.name_kana = f"カナ{PEOPLE.index((birth, quals))}"
        c.declaration.sex = 1
    raw = c.SerializeToString()
    # wire-level oddities: a field sent twice (protobuf merges: the last wins), an unknown field
    extra = draw(
        st.sampled_from(
            (b"",) * 6
            + (
                cpb.Claim(number="9").SerializeToString(),
                cpb.Claim(insurer_number=KUMIAI).SerializeToString(),
                cpb.Claim(first_visit_date=c.last_visit_date).SerializeToString(),
                cpb.Claim(points=7).SerializeToString(),
                b"\xf8\x06\x01",
            )
        )
    )  # field 111, varint
    raw += extra
    return b"\x0a" + _varint(len(raw)) + raw


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def compare(native, python, raw: bytes, facility, record: bool) -> tuple:
    got = native.verify_serialized(raw, facility, record)
    want = python.verify_serialized(raw, facility, record)
    assert got[0] == want[0], (got, want)
    if got[0] != "ok":
        assert got == want
        return got
    assert got[1] == want[1]  # byte-identical responses
    if record:
        assert got[2] == want[2]  # the same ledger rows, in claim order
    else:
        assert got[2] is None and want[2] is None
    # each claim's outcome, as the access log records it, is the verdict's in the response
    verdicts = cpb.VerifyClaimsResponse.FromString(got[1]).verdicts
    assert got[3] == want[3] == bytes(v.outcome for v in verdicts)
    return got


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_native_pass_and_python_rules_agree(store, data):
    n = data.draw(st.integers(1, 12))
    raw = b"".join(data.draw(claims(i)) for i in range(n))
    facility = data.draw(st.sampled_from((None, None, FACILITY)))
    record = data.draw(st.booleans())
    native, python = verifiers(store)
    compare(native, python, raw, facility, record)
    compare(native, python, raw, facility, record)  # warm caches decide the same


def test_a_plain_batch_is_decided_natively(store):
    """The common claim really takes the native pass (so the test above compares
    two paths): an OK claim billed to the covering number is a plain key."""
    c = cpb.Claim(
        claim_id="c1", facility_code=FACILITY, insurer_number=KUMIAI, symbol="A", number="9", branch="1", points=12
    )
    c.birth_date.CopyFrom(type(c.birth_date)(year=1980, month=6, day=6))
    c.first_visit_date.CopyFrom(type(c.birth_date)(year=2024, month=4, day=3))
    c.last_visit_date.CopyFrom(type(c.birth_date)(year=2024, month=4, day=9))
    raw = cpb.VerifyClaimsRequest(claims=[c]).SerializeToString()
    batch = _claims.parse(raw, {}, None)
    assert batch.keys == [f"{KUMIAI}\x1fA\x1f9\x1f01".encode()]
    native, python = verifiers(store)
    _, response, items, _ = compare(native, python, raw, None, True)
    assert cpb.VerifyClaimsResponse.FromString(response).verdicts[0].outcome == cpb.OUTCOME_OK
    assert items == [(f"{FACILITY}\x1f".encode() + (202404).to_bytes(4, "big"), b"c1", f"{KUMIAI}\x1f12".encode())]


def test_broken_framing_is_left_to_python(store):
    raw = cpb.VerifyClaimsRequest(claims=[cpb.Claim(claim_id="x")]).SerializeToString()
    assert _claims.parse(raw[:-1], {}, None) is None
    native, python = verifiers(store)
    assert native.verify_serialized(raw[:-1]) == python.verify_serialized(raw[:-1])
    kind, violations = native.verify_serialized(raw[:-1])
    assert kind == "invalid" and violations[0][0] == "claims"  # INVALID_ARGUMENT, not a crash


@pytest.mark.parametrize(("parts", "share"), [(2, -1.0), (2, 0.3), (3, 0.1), (3, 0.9), (5, 0.5)])
def test_split_cuts_at_claim_boundaries(parts, share):
    claims = [cpb.Claim(claim_id=f"c{i}", number="x" * (i % 7)) for i in range(101)]
    raw = cpb.VerifyClaimsRequest(claims=claims).SerializeToString()
    pieces, n = _claims.split(raw, parts, share)
    assert n == 101 and len(pieces) == parts
    assert b"".join(p for p, _ in pieces) == raw
    bases = [base for _, base in pieces]
    for (piece, base), nxt in zip(pieces, [*bases[1:], n], strict=True):
        assert list(cpb.VerifyClaimsRequest.FromString(piece).claims) == claims[base:nxt]
    want_first = int(101 * (share if share >= 0 else 1 / parts) + 0.5)
    assert bases[1] == want_first
    assert _claims.split(raw + b"\x10\x01", 2) is None  # a field other than claims: not split


def test_a_long_folded_symbol_is_keyed_natively_once_python_folded_it(store):
    symbol = "\U0002000b" * 20  # 80 UTF-8 bytes: the longest symbol the native key holds
    c = cpb.Claim(
        claim_id="long",
        facility_code=FACILITY,
        insurer_number=KUMIAI,
        symbol=symbol,
        number="8" * 20,
        branch="99",
        points=5,
    )
    c.birth_date.CopyFrom(type(c.birth_date)(year=1966, month=6, day=6))
    c.first_visit_date.CopyFrom(type(c.birth_date)(year=2024, month=4, day=3))
    c.last_visit_date.CopyFrom(type(c.birth_date)(year=2024, month=4, day=3))
    raw = cpb.VerifyClaimsRequest(claims=[c]).SerializeToString()
    native, python = verifiers(store)
    assert _claims.parse(raw, native._symbol_bytes, None).keys == []  # not folded yet: Python's
    compare(native, python, raw, None, True)
    (key,) = _claims.parse(raw, native._symbol_bytes, None).keys
    assert key == f"{KUMIAI}\x1f{symbol}\x1f{'8' * 20}\x1f99".encode() and len(key) == 113
    _, response, _, _ = compare(native, python, raw, None, True)
    assert cpb.VerifyClaimsResponse.FromString(response).verdicts[0].outcome == cpb.OUTCOME_OK
