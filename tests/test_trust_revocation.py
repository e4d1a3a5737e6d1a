"""Revoking caller certificates (facility, insurer, review body, operator), not
only cards, through real mTLS servers: `onshi serve` (two workers) and `onshi
ingest-serve` given `--caller-crl`. A certificate revoked with `onshi pki
revoke` is refused UNAUTHENTICATED by both, also on a connection opened before;
its renewal (same facility, same role, other serial) keeps working; a new list
takes effect without a restart, when the file changes or on SIGHUP."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import grpc
import pytest

from onshi.core import pki
from onshi.v1 import audit_pb2, audit_pb2_grpc, eligibility_pb2_grpc
from tests.ingest_support import Proc, onshi
from tests.trust_helpers import FACILITY, access_proof_fields, build_store, card_request, pki_dir


def onshi_ca() -> pki.Issued:
    return pki.load_issued(*(os.path.join(pki_dir(), "onshi", n) for n in ("ca.pem", "ca.key.pem")))


def save(tmp, name: str, issued: pki.Issued) -> str:
    path = str(tmp / f"{name}.pem")
    with open(path, "wb") as f:
        f.write(pki.pem(issued.cert))
    return path


def channel(port: int, issued: pki.Issued) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(pki.pem(onshi_ca().cert), pki.key_pem(issued.key), pki.pem(issued.cert))
    return grpc.secure_channel(f"127.0.0.1:{port}", creds)


def outcome(call) -> str:
    """'ok', or the status code name and whether the message says revoked."""
    try:
        call()
        return "ok"
    except grpc.RpcError as exc:
        return f"{exc.code().name}{' revoked' if 'revoked' in (exc.details() or '') else ''}"


def on_both(servers, issued, ch=None) -> tuple[str, str]:
    """A facility call on each server: CheckByCard on serve, ListMyAccess on ingest-serve."""
    elig, ingest = servers["serve"].port, servers["ingest"].port
    a = ch[0] if ch else channel(elig, issued)
    b = ch[1] if ch else channel(ingest, issued)
    check = eligibility_pb2_grpc.EligibilityServiceStub(a)
    access = audit_pb2_grpc.AuditServiceStub(b)
    return (
        outcome(lambda: check.CheckByCard(card_request("valid-3"), timeout=10)),
        outcome(
            lambda: access.ListMyAccess(audit_pb2.ListMyAccessRequest(**access_proof_fields("valid-3")), timeout=10)
        ),
    )


def until(condition, timeout: float = 20.0):
    """Wait for a state the servers reach by themselves (a reload), not a time bound."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("caller-crl")
    build_store(str(base / "store"))
    crl = base / "caller-crl.der"
    pki.revoke_callers(pki_dir(), [], str(crl))  # an empty list by the onshi CA
    common = ("--pki", pki_dir(), "--caller-crl", str(crl))
    serve = Proc(
        onshi(
            "serve",
            "--data",
            str(base / "store"),
            "--port",
            "0",
            "--workers",
            "2",
            "--engine",
            "pure",
            "--port-file",
            str(base / "serve.port"),
            *common,
        ),
        base / "serve.port",
        base / "serve.log",
    )
    ingest = Proc(
        onshi(
            "ingest-serve",
            "--data",
            str(base / "store"),
            "--port",
            "0",
            "--port-file",
            str(base / "ingest.port"),
            *common,
        ),
        base / "ingest.port",
        base / "ingest.log",
    )
    yield {"serve": serve, "ingest": ingest, "crl": str(crl), "base": base}
    serve.stop()
    ingest.stop()


def test_a_revoked_facility_certificate_is_refused_on_both_servers_and_its_renewal_works(servers, tmp_path):
    ca = onshi_ca()
    stolen = pki.issue_client(ca, "facility", (FACILITY,))
    renewal = pki.issue_client(ca, "facility", (FACILITY,))  # same facility and role, another serial
    assert on_both(servers, stolen) == ("ok", "ok")
    assert on_both(servers, renewal) == ("ok", "ok")
    open_before = (channel(servers["serve"].port, stolen), channel(servers["ingest"].port, stolen))
    assert on_both(servers, stolen, open_before) == ("ok", "ok")

    cli = subprocess.run(
        onshi("pki", "revoke", "--pki", pki_dir(), "--cert", save(tmp_path, "stolen", stolen), "--crl", servers["crl"]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"{stolen.cert.serial_number:x}" in cli.stdout

    refused = ("UNAUTHENTICATED revoked", "UNAUTHENTICATED revoked")
    # No restart: both servers (each serve worker) pick the new list up by themselves.
    assert until(lambda: all(on_both(servers, stolen) == refused for _ in range(4))), on_both(servers, stolen)
    assert on_both(servers, stolen, open_before) == refused  # a connection opened before the revocation too
    for _ in range(4):  # whichever worker answers
        assert on_both(servers, renewal) == ("ok", "ok")
    assert servers["serve"].proc.poll() is None and servers["ingest"].proc.poll() is None


def test_every_caller_role_can_be_revoked(servers):
    """Insurer, review body and operator certificates are refused once revoked."""
    from onshi.v1 import trust_pb2, trust_pb2_grpc

    ca = onshi_ca()
    callers = [
        pki.issue_client(ca, "insurer", pki.INSURERS["insurer-a"]),
        pki.issue_client(ca, "review"),
        pki.issue_client(ca, "operator"),
    ]

    def status(issued) -> str:  # a call every role may make
        stub = trust_pb2_grpc.TrustServiceStub(channel(servers["ingest"].port, issued))
        return outcome(lambda: stub.GetSystemFailureMode(trust_pb2.GetSystemFailureModeRequest(), timeout=10))

    assert [status(c) for c in callers] == ["ok"] * 3
    pki.revoke_callers(pki_dir(), [c.cert.serial_number for c in callers], servers["crl"])
    assert until(lambda: [status(c) for c in callers] == ["UNAUTHENTICATED revoked"] * 3), [status(c) for c in callers]


def test_sighup_reloads_the_list_at_once_without_stopping(servers):
    """A list whose file looks unchanged (same size and mtime) is not picked up
    by the watcher; SIGHUP to each server reloads it, and neither server stops."""
    ca = onshi_ca()
    # Serials of one length: both lists then have the same size.
    first = pki.issue_client(ca, "facility", (FACILITY,), serial=0x5A00000000000000000000000000000000000001)
    second = pki.issue_client(ca, "facility", (FACILITY,), serial=0x5A00000000000000000000000000000000000002)
    path = servers["crl"]
    kept = pki.crl_serials(open(path, "rb").read(), [ca.cert])
    pki.revoke_callers(pki_dir(), [first.cert.serial_number], path)
    refused = ("UNAUTHENTICATED revoked", "UNAUTHENTICATED revoked")
    assert until(lambda: all(on_both(servers, first) == refused for _ in range(4)))
    assert on_both(servers, second) == ("ok", "ok")

    # The other one revoked instead, in a file with the old size and mtime.
    from cryptography.hazmat.primitives import serialization

    before = os.stat(path)
    swapped = pki.make_crl(ca, sorted(kept | {second.cert.serial_number}), days=365).public_bytes(
        serialization.Encoding.DER
    )
    assert len(swapped) == before.st_size
    tmp = path + ".swap"
    with open(tmp, "wb") as f:
        f.write(swapped)
    os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(tmp, path)
    time.sleep(2.5)  # more than the watcher's second: it saw nothing to reload
    assert all(on_both(servers, first) == refused for _ in range(4))
    assert on_both(servers, second) == ("ok", "ok")

    os.kill(servers["serve"].proc.pid, signal.SIGHUP)  # the supervisor forwards it to its workers
    os.kill(servers["ingest"].proc.pid, signal.SIGHUP)
    assert until(lambda: all(on_both(servers, second) == refused for _ in range(4))), on_both(servers, second)
    for _ in range(4):
        assert on_both(servers, first) == ("ok", "ok")
    assert servers["serve"].proc.poll() is None and servers["ingest"].proc.poll() is None


def test_a_list_not_signed_by_the_onshi_ca_is_refused_at_start_and_ignored_later(servers, tmp_path):
    rogue = pki.load_issued(os.path.join(pki_dir(), "rogue", "ca.pem"), os.path.join(pki_dir(), "rogue", "ca.key.pem"))
    forged = tmp_path / "forged.der"
    pki.write_crl(str(forged), pki.make_crl(rogue, []))
    proc = subprocess.run(
        onshi(
            "serve",
            "--data",
            str(servers["base"] / "store"),
            "--port",
            "0",
            "--workers",
            "1",
            "--pki",
            pki_dir(),
            "--caller-crl",
            str(forged),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "caller revocation list" in proc.stderr and "not signed by the onshi CA" in proc.stderr
    assert proc.stderr.count("\n") <= 2, proc.stderr  # one clear line, no traceback

    # Swapped in under running servers: ignored, the list in force stays.
    revoked = pki.issue_client(onshi_ca(), "facility", (FACILITY,))
    pki.revoke_callers(pki_dir(), [revoked.cert.serial_number], servers["crl"])
    refused = ("UNAUTHENTICATED revoked", "UNAUTHENTICATED revoked")
    assert until(lambda: all(on_both(servers, revoked) == refused for _ in range(4)))
    good = open(servers["crl"], "rb").read()
    os.replace(str(forged), servers["crl"])
    os.kill(servers["serve"].proc.pid, signal.SIGHUP)
    os.kill(servers["ingest"].proc.pid, signal.SIGHUP)
    time.sleep(2.5)
    assert all(on_both(servers, revoked) == refused for _ in range(4))
    pki.write_crl(servers["crl"], pki.make_crl(onshi_ca(), sorted(pki.crl_serials(good, [onshi_ca().cert])), days=365))
    assert "not reloaded, the previous one stays in force" in (servers["base"] / "ingest.log").read_text()


def test_certificates_without_their_serial_uri_are_refused_when_revocation_is_on(servers):
    """Callers are cached by their SANs: a certificate that does not name its own
    serial there could share a cache entry with a revoked one, so it is refused."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca = onshi_ca()
    key = pki.new_rsa_key()
    now = dt.datetime.now(dt.UTC)
    old_style = pki.Issued(
        (
            x509.CertificateBuilder()
            .subject_name(pki._name(FACILITY, ou="facility"))
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(f"urn:onshi:facility:{FACILITY}"),
                        x509.UniformResourceIdentifier("urn:onshi:role:facility"),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca.key, hashes.SHA256())
        ),
        key,
    )
    assert on_both(servers, old_style) == ("UNAUTHENTICATED", "UNAUTHENTICATED")
