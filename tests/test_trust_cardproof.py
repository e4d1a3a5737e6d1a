"""Card proof verification without a server: each refusal has its own reason,
the challenge bytes are exactly the documented ones, the cache is used."""

from __future__ import annotations

import os
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from onshi.core import cardproof, pki
from onshi.core.cardproof import CardProofError, CardVerifier, MalformedProof
from onshi.v1 import eligibility_pb2
from tests.conftest import native_available
from tests.trust_helpers import (
    FACILITY,
    OTHER_FACILITY,
    card_files,
    pki_dir,
    proof_fields,
    serial_of,
)


def verifier(**kw) -> CardVerifier:
    base = os.path.join(pki_dir(), "jpki")
    return CardVerifier.from_files([os.path.join(base, "ca.pem")], os.path.join(base, "crl.der"), **kw)


CHECK = cardproof.PURPOSE_CHECK_BY_CARD
ACCESS = cardproof.PURPOSE_LIST_MY_ACCESS


def verify(v: CardVerifier, card: str, caller: str | None = FACILITY, *, for_purpose: str = CHECK, **kw):
    f = proof_fields(card, **kw)
    ch = f["challenge"]
    return v.verify(
        f["card_certificate"],
        ch.facility_code,
        ch.timestamp_unix,
        ch.nonce,
        f["card_signature"],
        caller,
        purpose=for_purpose,
    )


def reason(v, card, **kw) -> str:
    with pytest.raises(CardProofError) as info:
        verify(v, card, **kw)
    return info.value.reason


def test_challenge_bytes_are_the_contract():
    """The signed bytes name the RPC the proof is for (eligibility.proto's comment)."""
    assert (
        cardproof.challenge_bytes(CHECK, "1310000001", 1700000000, bytes.fromhex("00ff10"))
        == b"onshi/v1/card-proof\n/onshi.v1.EligibilityService/CheckByCard\n1310000001\n1700000000\n00ff10"
    )
    assert (
        cardproof.challenge_bytes(ACCESS, "1310000001", 1700000000, bytes.fromhex("00ff10"))
        == b"onshi/v1/card-proof\n/onshi.v1.AuditService/ListMyAccess\n1310000001\n1700000000\n00ff10"
    )
    with pytest.raises(ValueError):
        cardproof.challenge_bytes("/onshi.v1.EligibilityService/CheckByNumber", "1310000001", 1, b"x" * 16)


def test_the_documented_signed_bytes_are_the_ones_checked():
    """eligibility.proto states the layout; the verifier checks exactly it."""
    import re

    proto = os.path.join(os.path.dirname(__file__), "..", "proto", "onshi", "v1", "eligibility.proto")
    text = open(proto, encoding="utf-8").read()
    for purpose in cardproof.PURPOSES:
        assert f'"{purpose}"' in text, purpose
    assert re.search(r'"onshi/v1/card-proof\\n" \+ purpose \+ "\\n" \+ facility_code \+ "\\n"', text)


@pytest.mark.parametrize("signed_for,presented_to", [(CHECK, ACCESS), (ACCESS, CHECK)])
def test_a_proof_signed_for_one_purpose_fails_for_another(signed_for, presented_to):
    v = verifier()
    nonce = os.urandom(16)
    with pytest.raises(CardProofError) as info:
        verify(v, "valid-1", nonce=nonce, purpose=signed_for, for_purpose=presented_to)
    assert info.value.reason == "CARD_SIGNATURE_INVALID"
    verify(v, "valid-1", nonce=nonce, purpose=signed_for, for_purpose=signed_for)  # its own purpose: fine


def test_a_valid_card_gives_its_serial_and_no_warning():
    proof = verify(verifier(), "valid-1")
    assert proof.card.serial == serial_of("valid-1")
    assert proof.serial_key == serial_of("valid-1").to_bytes(20, "big")
    assert proof.warnings == b""


def test_expiring_within_three_months_warns_in_checkresponse_field_3():
    proof = verify(verifier(), "expiring")
    answer = eligibility_pb2.CheckResponse.FromString(b"\x08\x01" + proof.warnings)
    assert [w.code for w in answer.warnings] == [eligibility_pb2.WARNING_CODE_CARD_CERTIFICATE_EXPIRING]
    assert "expires on" in answer.warnings[0].message


@pytest.mark.parametrize(
    "card,expected",
    [
        ("expired", "CARD_CERTIFICATE_EXPIRED"),
        ("not-yet-valid", "CARD_CERTIFICATE_NOT_YET_VALID"),
        ("revoked", "CARD_CERTIFICATE_REVOKED"),
        ("forged", "CARD_CERTIFICATE_UNTRUSTED"),
    ],
)
def test_certificate_states_are_distinct(card, expected):
    assert reason(verifier(), card) == expected


def test_stale_and_future_timestamps():
    v = verifier()
    assert reason(v, "valid-1", timestamp=int(time.time()) - 600) == "CARD_PROOF_STALE"
    assert reason(v, "valid-1", timestamp=int(time.time()) + 600) == "CARD_PROOF_STALE"
    verify(v, "valid-1", timestamp=int(time.time()) - 120)  # within the window


def test_replayed_nonce_is_refused_once_used():
    v = verifier()
    nonce = os.urandom(16)
    f = proof_fields("valid-1", nonce=nonce)
    ch = f["challenge"]
    args = (f["card_certificate"], ch.facility_code, ch.timestamp_unix, ch.nonce, f["card_signature"], FACILITY)
    v.verify(*args, purpose=CHECK)
    with pytest.raises(CardProofError) as info:
        v.verify(*args, purpose=CHECK)
    assert info.value.reason == "CARD_PROOF_REPLAYED"


def test_bad_signature_does_not_burn_the_nonce():
    v = verifier()
    nonce = os.urandom(16)
    # Signed for another facility: the signature does not cover this challenge.
    assert reason(v, "valid-1", nonce=nonce, sign_facility=OTHER_FACILITY) == "CARD_SIGNATURE_INVALID"
    verify(v, "valid-1", nonce=nonce)  # the real card can still use it


def test_another_cards_key_cannot_sign():
    v = verifier()
    f = proof_fields("valid-1")
    _, other_key = card_files("valid-2")
    ch = f["challenge"]
    sig = other_key.sign(
        cardproof.challenge_bytes(CHECK, ch.facility_code, ch.timestamp_unix, ch.nonce),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    with pytest.raises(CardProofError) as info:
        v.verify(f["card_certificate"], ch.facility_code, ch.timestamp_unix, ch.nonce, sig, FACILITY, purpose=CHECK)
    assert info.value.reason == "CARD_SIGNATURE_INVALID"


def test_challenge_for_another_facility_is_permission_denied():
    with pytest.raises(CardProofError) as info:
        verify(verifier(), "valid-1", facility=OTHER_FACILITY)
    assert info.value.reason == "CARD_PROOF_FACILITY_MISMATCH"
    assert info.value.code == "PERMISSION_DENIED"


def test_malformed_fields_are_field_violations():
    v = verifier()
    with pytest.raises(MalformedProof) as info:
        v.verify(b"", "13100", 0, b"short", b"", FACILITY, purpose=CHECK)
    fields = {f for f, _ in info.value.violations}
    assert fields == {"card_certificate", "challenge.facility_code", "challenge.nonce", "card_signature"}
    with pytest.raises(MalformedProof):
        v.verify(b"not der", FACILITY, int(time.time()), os.urandom(16), b"x", FACILITY, purpose=CHECK)


def test_verified_certificates_are_cached():
    v = verifier()
    verify(v, "valid-2")
    der, _ = card_files("valid-2")
    assert v.card(der) is v.card(der)
    assert len(v._cache) == 1


def test_revocation_list_reload_and_signature(tmp_path):
    jpki = pki.load_issued(os.path.join(pki_dir(), "jpki", "ca.pem"), os.path.join(pki_dir(), "jpki", "ca.key.pem"))
    crl_path = str(tmp_path / "crl.der")
    clock = [time.time()]
    v = CardVerifier([jpki.cert], cardproof.RevocationList.from_file(crl_path, [jpki.cert]), clock=lambda: clock[0])
    verify(v, "valid-3")  # no list yet: nothing revoked
    from cryptography.hazmat.primitives import serialization

    crl = pki.make_crl(jpki, [serial_of("valid-3")]).public_bytes(serialization.Encoding.DER)
    assert cardproof.install_revocation_list(crl_path, crl, [jpki.cert]) == 1
    clock[0] += 2  # the file is looked at no more than once a second
    assert reason(v, "valid-3") == "CARD_CERTIFICATE_REVOKED"
    rogue = pki.load_issued(
        os.path.join(pki_dir(), "rogue", "jpki-ca.pem"), os.path.join(pki_dir(), "rogue", "jpki-ca.key.pem")
    )
    forged_crl = pki.make_crl(rogue, []).public_bytes(serialization.Encoding.DER)
    with pytest.raises(ValueError):
        cardproof.install_revocation_list(crl_path, forged_crl, [jpki.cert])


def test_pki_layout_is_as_documented():
    base = pki_dir()
    for rel in (
        "jpki/ca.pem",
        "jpki/crl.der",
        "cards/valid-1.der",
        "cards/valid-1.key.pem",
        "cards/index.json",
        "onshi/ca.pem",
        "onshi/server.pem",
        "onshi/facility-1310000001.pem",
        "onshi/insurer-a.pem",
        "onshi/review.pem",
        "onshi/operator.pem",
        "relay/signing.key.pem",
        "rogue/ca.pem",
    ):
        assert os.path.exists(os.path.join(base, rel)), rel
    with open(os.path.join(base, "cards", "expiring.pem"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    assert cert.serial_number == serial_of("expiring")


# The native table (src/ext/_cardproof.pyx) and the pure-Python reference: conftest's impl.


def test_shared_replay_cache_refuses_a_replay_in_another_process(impl):
    shared = cardproof.SharedReplayCache(300, slots=4096, kind=impl)
    nonce = os.urandom(16)
    now = time.time()
    assert shared.add(nonce, now)
    pid = os.fork()
    if pid == 0:  # another worker, after fork: same memory
        code = 0 if (not shared.add(nonce, now) and shared.add(os.urandom(16), now)) else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not shared.add(nonce, now + 10)
    assert shared.add(nonce, now + 601)  # the window passed: the slot is reused
    v = verifier(replays=shared)
    f = proof_fields("valid-1")
    ch = f["challenge"]
    args = (f["card_certificate"], ch.facility_code, ch.timestamp_unix, ch.nonce, f["card_signature"], FACILITY)
    v.verify(*args, purpose=CHECK)
    v2 = verifier(replays=shared)  # another worker's verifier, same table
    with pytest.raises(CardProofError) as info:
        v2.verify(*args, purpose=CHECK)
    assert info.value.reason == "CARD_PROOF_REPLAYED"


def test_full_replay_table_fails_closed(impl):
    shared = cardproof.SharedReplayCache(300, slots=64, kind=impl)
    now = time.time()
    with pytest.raises(cardproof.ReplayCacheFull):
        for _ in range(64 * 4):
            shared.add(os.urandom(16), now)


def test_worker_dying_inside_the_replay_lock_does_not_block_the_others(impl):
    import fcntl

    shared = cardproof.SharedReplayCache(300, slots=4096, kind=impl)
    pid = os.fork()
    if pid == 0:
        if impl == "native":
            shared._native.hold_lock()
        else:
            fcntl.lockf(shared._lock_file, fcntl.LOCK_EX)
        os._exit(0)  # dies holding the lock
    os.waitpid(pid, 0)
    assert shared.add(os.urandom(16), time.time())


# --- the replay table in a file: every server of a deployment on a host -------------------


def _open_in_another_process(path: str, kind: str, nonce: bytes, now: float) -> str:
    """Open the table file in an unrelated process (not a fork) and add `nonce`."""
    import subprocess
    import sys

    code = (
        "import sys; from onshi.core import cardproof as c; "
        f"t = c.SharedReplayCache(300, slots=4096, kind={kind!r}, path={path!r}); "
        f"print('new' if t.add(bytes.fromhex({nonce.hex()!r}), {now!r}) else 'replay')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_replay_table_file_is_shared_by_unrelated_processes_and_restarts(impl, tmp_path):
    path = str(tmp_path / "replays")
    first = cardproof.SharedReplayCache(300, slots=4096, kind=impl, path=path)
    now = time.time()
    used_here, used_there = os.urandom(16), os.urandom(16)
    assert first.add(used_here, now)
    # Another server process: refuses what this one accepted; what it accepts, this one refuses.
    assert _open_in_another_process(path, impl, used_here, now) == "replay"
    assert _open_in_another_process(path, impl, used_there, now) == "new"
    assert not first.add(used_there, now)
    first.close()
    # Every server stopped and started again: the nonces are still remembered.
    again = cardproof.SharedReplayCache(300, slots=4096, kind=impl, path=path)
    assert not again.add(used_here, now + 1) and not again.add(used_there, now + 1)
    assert again.add(used_here, now + 601)  # its window passed
    again.close()


def test_replay_table_file_lock_left_in_any_state_is_remade_by_the_first_opener(impl, tmp_path):
    """A reboot or a process killed mid-lock can leave the lock bytes anything;
    the first process to open the file (no other holds it) makes it anew and
    keeps the remembered nonces."""
    path = str(tmp_path / "replays")
    table = cardproof.SharedReplayCache(300, slots=4096, kind=impl, path=path)
    nonce = os.urandom(16)
    now = time.time()
    assert table.add(nonce, now)
    table.close()
    with open(path, "r+b") as f:
        f.seek(cardproof.SharedReplayCache.TABLE_OFFSET)
        f.write(b"\xff" * cardproof.SharedReplayCache.LOCK_AREA)
    table = cardproof.SharedReplayCache(300, slots=4096, kind=impl, path=path)
    assert not table.add(nonce, now)
    assert table.add(os.urandom(16), now)
    table.close()


def test_replay_table_file_refuses_a_mismatched_second_server(tmp_path):
    path = str(tmp_path / "replays")
    table = cardproof.SharedReplayCache(300, slots=4096, kind="pure", path=path)
    with pytest.raises(ValueError, match="start every server"):
        cardproof.SharedReplayCache(300, slots=8192, kind="pure", path=path)
    if native_available("_cardproof"):
        with pytest.raises(ValueError, match="start every server"):
            cardproof.SharedReplayCache(300, slots=4096, kind="native", path=path)
    table.close()
    other = tmp_path / "not-a-table"
    other.write_bytes(b"some file the operator keeps here")
    with pytest.raises(ValueError, match="not a card-proof replay table"):
        cardproof.SharedReplayCache(300, slots=4096, path=str(other))
    assert other.read_bytes() == b"some file the operator keeps here"
