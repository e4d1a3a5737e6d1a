"""Test PKI for demos and tests: `onshi pki init --out DIR` (DOMAIN.md §8).

Nothing is downloaded: every key and certificate is generated here. The layout
(also in docs/TRUST.md) is deterministic so scripts, tests and the clinic
terminal can name files without reading an index:

    DIR/jpki/ca.pem, ca.key.pem        test JPKI CA (issues user-authentication certs)
    DIR/jpki/crl.der, crl.pem          its revocation list (an X.509 CRL)
    DIR/cards/<name>.der|.pem|.key.pem  card certificates and keys (RSA 2048),
                                       certificate serial = card serial
    DIR/cards/index.json               name -> serial (hex), not_before, not_after, state
    DIR/rogue/jpki-ca.pem, ca.pem ...  a second, untrusted CA with the same names
                                       (forged cards, foreign client certs)
    DIR/onshi/ca.pem, ca.key.pem       the onshi CA: issues server and client certs
    DIR/onshi/server.pem, server.key.pem   127.0.0.1 / localhost
    DIR/onshi/<role>-<code>.pem, .key.pem  client certificates, see ROLE_FILES
    DIR/onshi/caller-crl.der           revoked caller certificates (an X.509 CRL by
                                       the onshi CA; `onshi pki revoke` adds to it)
    DIR/relay/signing.key.pem, signing.pub.pem   the relay's Ed25519 key

Client certificates carry the role and the codes they may act for:
    subject OU  = role (facility | insurer | review | operator)
    subject CN  = the first code (facility code, insurer number) or the role name
    SAN URIs    = urn:onshi:facility:<10 digits>, urn:onshi:insurer:<number> (repeatable),
                  urn:onshi:role:<role>, and urn:onshi:cert:<serial, lowercase hex>
The SAN URIs are authoritative (onshi.server.auth reads them). The serial URI
makes every certificate's SAN set its own, so a server that caches callers by
their SANs (what gRPC hands each call cheaply) can tell a revoked certificate
from its renewal.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from typing import TypedDict

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .callers import ROLES

URN_PREFIX = "urn:onshi:"
CERT_URN = URN_PREFIX + "cert:"  # + the certificate's serial, lowercase hex


def role_and_codes(cert: x509.Certificate) -> tuple[set[str], frozenset[str]]:
    """The roles a caller certificate names (urn:onshi:role:<role>) and, for a
    single role, its codes (urn:onshi:<role>:<code>). Checking them (one role,
    the codes a role needs) is the server's: onshi.server.auth."""
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        uris = []
    roles = {u[len(URN_PREFIX) + 5 :] for u in uris if u.startswith(URN_PREFIX + "role:")}
    if len(roles) != 1:
        return roles, frozenset()
    prefix = f"{URN_PREFIX}{next(iter(roles))}:"
    return roles, frozenset(u[len(prefix) :] for u in uris if u.startswith(prefix))


CALLER_CRL = os.path.join("onshi", "caller-crl.der")

# Demo identities. Insurer numbers carry valid check digits (DOMAIN.md §2).
FACILITY_CODES = ("1310000001", "1310000002")
INSURERS = {"insurer-a": ("06139992",), "insurer-b": ("01130012", "39131156"), "insurer-c": ("31130016",)}
# Card serials of the demo cards: chosen small and fixed so a generated store can
# link them (`onshi gen` / tests link serial -> person themselves).
CARDS = {
    # name: (serial, not_before offset days, not_after offset days, revoked)
    "valid-1": (0x1001, -365, 365 * 4, False),
    "valid-2": (0x1002, -365, 365 * 4, False),
    "valid-3": (0x1003, -365, 365 * 4, False),
    "expiring": (0x1004, -365 * 4, 45, False),  # <= 3 months left: warning
    "expired": (0x1005, -365 * 5, -10, False),
    "not-yet-valid": (0x1006, 30, 365 * 5, False),
    "revoked": (0x1007, -365, 365 * 4, True),
}
FORGED_CARD = ("forged", 0x1001)  # same serial as valid-1, signed by the rogue JPKI CA


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey


class Client(TypedDict):
    role: str
    codes: list[str]  # facility codes or insurer numbers


class Manifest(TypedDict):
    """What init() wrote (manifest.json)."""

    cards: dict[str, dict[str, str]]  # card name -> serial, not_before, not_after, state
    clients: dict[str, Client]  # certificate stem -> its caller
    created: str


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str, ou: str | None = None, org: str = "onshi test") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def make_ca(
    common_name: str, org: str = "onshi test", *, key: rsa.RSAPrivateKey | None = None, days: int = 3650
) -> Issued:
    key = key or new_rsa_key()
    name = _name(common_name, org=org)
    now = now_utc()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue_card(
    ca: Issued, serial: int, not_before: dt.datetime, not_after: dt.datetime, key: rsa.RSAPrivateKey | None = None
) -> Issued:
    """A JPKI user-authentication certificate: no name or address, the serial is the key."""
    key = key or new_rsa_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"card {serial:X}", ou="JPKI user authentication"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue_client(
    ca: Issued,
    role: str,
    codes: tuple[str, ...] = (),
    *,
    days: int = 825,
    not_after: dt.datetime | None = None,
    serial: int | None = None,
) -> Issued:
    """A caller certificate: role in OU, codes as SAN URIs (urn:onshi:<role>:<code>),
    its own serial as urn:onshi:cert:<hex>."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    key = new_rsa_key()
    now = now_utc()
    serial = serial or x509.random_serial_number()
    uris = [x509.UniformResourceIdentifier(f"{URN_PREFIX}{role}:{c}") for c in codes]
    uris.append(x509.UniformResourceIdentifier(f"{URN_PREFIX}role:{role}"))
    uris.append(x509.UniformResourceIdentifier(f"{CERT_URN}{serial:x}"))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(codes[0] if codes else role, ou=role))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(uris), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue_server(
    ca: Issued, hosts: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1", "::1")
) -> Issued:
    import ipaddress

    key = new_rsa_key()
    now = now_utc()
    san = [x509.DNSName(h) for h in hosts] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost", ou="server"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def crl_serials(data: bytes, ca_certs: list[x509.Certificate], what: str = "a configured CA") -> frozenset[int]:
    """The revoked serials of a CRL (DER or PEM); ValueError unless it parses
    and one of `ca_certs` issued and signed it."""
    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
        if not any(crl.issuer == ca.subject and _signed_by(crl, ca) for ca in ca_certs):
            raise ValueError(f"revocation list is not signed by {what}")
        return frozenset(r.serial_number for r in crl)
    except (x509.InvalidVersion, TypeError, UnsupportedAlgorithm) as exc:  # the parser's, not ValueErrors
        raise ValueError(f"not a revocation list ({exc})") from None


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    key = ca.public_key()
    if not isinstance(
        key,
        (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey, dsa.DSAPublicKey),
    ):
        return False  # a key that cannot sign (X25519, X448, ML-KEM)
    return crl.is_signature_valid(key)


def make_crl(ca: Issued, revoked_serials: list[int], *, days: int = 7) -> x509.CertificateRevocationList:
    now = now_utc()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - dt.timedelta(days=1)).build()
        )
    return builder.sign(ca.key, hashes.SHA256())


# --- files -----------------------------------------------------------------


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: str, data: bytes, private: bool = False) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def save_issued(out: str, stem: str, issued: Issued, der: bool = False) -> None:
    _write(os.path.join(out, stem + ".pem"), pem(issued.cert))
    _write(os.path.join(out, stem + ".key.pem"), key_pem(issued.key), private=True)
    if der:
        _write(os.path.join(out, stem + ".der"), issued.cert.public_bytes(serialization.Encoding.DER))


def client_stem(role: str, code: str | None = None) -> str:
    return f"{role}-{code}" if code else role


def load_issued(cert_path: str, key_path: str) -> Issued:
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{key_path}: not an RSA key")
    return Issued(cert, key)


def init(out: str) -> Manifest:
    """Create the whole test PKI under `out`; returns the card index."""
    now = now_utc()
    jpki = make_ca("JPKI test CA for user authentication", org="J-LIS test")
    save_issued(os.path.join(out, "jpki"), "ca", jpki)
    index: dict[str, dict[str, str]] = {}
    revoked = []
    for name, (serial, nb, na, is_revoked) in CARDS.items():
        card = issue_card(jpki, serial, now + dt.timedelta(days=nb), now + dt.timedelta(days=na))
        save_issued(os.path.join(out, "cards"), name, card, der=True)
        if is_revoked:
            revoked.append(serial)
        state = (
            "revoked"
            if is_revoked
            else ("expired" if na < 0 else "not-yet-valid" if nb > 0 else "expiring" if na <= 92 else "valid")
        )
        index[name] = {
            "serial": format(serial, "X"),
            "not_before": (now + dt.timedelta(days=nb)).isoformat(),
            "not_after": (now + dt.timedelta(days=na)).isoformat(),
            "state": state,
        }
    crl = make_crl(jpki, revoked)
    _write(os.path.join(out, "jpki", "crl.der"), crl.public_bytes(serialization.Encoding.DER))
    _write(os.path.join(out, "jpki", "crl.pem"), crl.public_bytes(serialization.Encoding.PEM))

    # A rogue CA with the very same subject names: what a forger would make.
    rogue_jpki = make_ca("JPKI test CA for user authentication", org="J-LIS test")
    save_issued(os.path.join(out, "rogue"), "jpki-ca", rogue_jpki)
    name, serial = FORGED_CARD
    forged = issue_card(rogue_jpki, serial, now - dt.timedelta(days=365), now + dt.timedelta(days=365 * 4))
    save_issued(os.path.join(out, "cards"), name, forged, der=True)
    index[name] = {"serial": format(serial, "X"), "state": "forged"}

    onshi = make_ca("onshi test CA")
    save_issued(os.path.join(out, "onshi"), "ca", onshi)
    save_issued(os.path.join(out, "onshi"), "server", issue_server(onshi))
    clients: dict[str, Client] = {}
    for code in FACILITY_CODES:
        save_issued(os.path.join(out, "onshi"), client_stem("facility", code), issue_client(onshi, "facility", (code,)))
        clients[client_stem("facility", code)] = {"role": "facility", "codes": [code]}
    for stem, numbers in INSURERS.items():
        save_issued(os.path.join(out, "onshi"), stem, issue_client(onshi, "insurer", numbers))
        clients[stem] = {"role": "insurer", "codes": list(numbers)}
    for role in ("review", "operator"):
        save_issued(os.path.join(out, "onshi"), role, issue_client(onshi, role))
        clients[role] = {"role": role, "codes": []}
    write_crl(os.path.join(out, CALLER_CRL), make_crl(onshi, [], days=365))

    rogue = make_ca("onshi test CA")  # same name, other key
    save_issued(os.path.join(out, "rogue"), "ca", rogue)
    save_issued(
        os.path.join(out, "rogue"),
        client_stem("facility", FACILITY_CODES[0]),
        issue_client(rogue, "facility", (FACILITY_CODES[0],)),
    )

    relay = ed25519.Ed25519PrivateKey.generate()
    _write(os.path.join(out, "relay", "signing.key.pem"), key_pem(relay), private=True)
    _write(
        os.path.join(out, "relay", "signing.pub.pem"),
        relay.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )

    manifest: Manifest = {"cards": index, "clients": clients, "created": now.isoformat()}
    _write(os.path.join(out, "cards", "index.json"), json.dumps(index, indent=2).encode())
    _write(os.path.join(out, "manifest.json"), json.dumps(manifest, indent=2).encode())
    return manifest


def write_crl(path: str, crl: x509.CertificateRevocationList) -> None:
    """Replace a CRL file atomically (servers watching it never read half of one)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    _write(tmp, crl.public_bytes(serialization.Encoding.DER))
    os.replace(tmp, path)


def revoke_callers(pki_dir: str, serials: list[int], crl_path: str | None = None) -> frozenset[int]:
    """Add caller-certificate serials to the onshi CA's CRL (kept entries stay)
    and write it; returns every serial it now revokes."""
    ca = load_issued(os.path.join(pki_dir, "onshi", "ca.pem"), os.path.join(pki_dir, "onshi", "ca.key.pem"))
    path = crl_path or os.path.join(pki_dir, CALLER_CRL)
    kept: frozenset[int] = frozenset()
    if os.path.exists(path):
        with open(path, "rb") as f:
            kept = crl_serials(f.read(), [ca.cert], "the onshi CA")
    revoked = kept | frozenset(serials)
    write_crl(path, make_crl(ca, sorted(revoked), days=365))
    return revoked
