"""Relay tokens between insurers (DOMAIN.md §7).

Insurer A asks the relay which medical insurer B its member also belongs to.
The relay answers "B" plus a token: B's member number sealed to B's public key
(RSA-OAEP with SHA-256 to the key of B's onshi client certificate, so no other
key material has to be distributed), wrapped in a payload naming recipient,
requester, time and purpose, and signed by the relay with Ed25519. A forwards
the token; B calls `open_token` to check the relay's signature, that the token
is addressed to B and still fresh, and to decrypt the member number.

A learns only B's insurer number; the relay sees the numbers it must see; B
learns who asked and why. An altered byte breaks the signature; a token for B
shown to C fails the recipient check (and C's key cannot decrypt it anyway).

Every parameter below (signed bytes, OAEP hash, MGF and label, key types) is
published in proto/onshi/v1/relay.proto's opening comment, which is the
contract: tests/test_relay.py opens a token from those lines alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from google.protobuf.message import DecodeError

from ..v1 import relay_pb2
from . import pki

SIGNING_PREFIX = b"onshi/v1/relay-token\n"
TOKEN_LIFETIME = 24 * 3600
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=b"onshi/v1/relay")

MemberNumber = relay_pb2.MemberNumber


class RelayTokenError(ValueError):
    """The token is refused; `reason` says why (bad signature, wrong recipient...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenSealer:
    """The relay's side: seal to a recipient's key and sign."""

    def __init__(
        self,
        signing_key: ed25519.Ed25519PrivateKey,
        recipient_keys: dict[str, rsa.RSAPublicKey],
        clock: Callable[[], float] = time.time,
        lifetime: int = TOKEN_LIFETIME,
    ) -> None:
        self.signing_key = signing_key
        self.recipient_keys = recipient_keys
        self.clock = clock
        self.lifetime = lifetime

    def can_seal_for(self, insurer_number: str) -> bool:
        return insurer_number in self.recipient_keys

    def seal(self, member: MemberNumber, requester: str, legal_basis: str) -> bytes:
        recipient = member.insurer_number
        key = self.recipient_keys.get(recipient)
        if key is None:
            raise KeyError(f"no public key for insurer {recipient}")
        token_id = os.urandom(16)
        sealed = key.encrypt(
            relay_pb2.SealedMember(
                member=member, token_id=token_id, recipient_insurer_number=recipient
            ).SerializeToString(),
            _OAEP,
        )
        now = int(self.clock())
        payload = relay_pb2.RelayTokenPayload(
            recipient_insurer_number=recipient,
            requester_insurer_number=requester,
            sealed_member=sealed,
            issued_unix=now,
            expires_unix=now + self.lifetime,
            token_id=token_id,
            legal_basis=legal_basis,
        ).SerializeToString()
        return relay_pb2.RelayToken(
            payload=payload, signature=self.signing_key.sign(SIGNING_PREFIX + payload)
        ).SerializeToString()


def open_token(
    token: bytes,
    *,
    relay_public_key: ed25519.Ed25519PublicKey,
    my_insurer_numbers: set[str] | frozenset[str],
    my_private_key: rsa.RSAPrivateKey,
    now: float | None = None,
) -> tuple[MemberNumber, relay_pb2.RelayTokenPayload]:
    """The receiving insurer: verify the relay's signature, the recipient and the
    lifetime, then decrypt. Returns (member number, payload: requester, purpose...)."""
    try:
        wrapper = relay_pb2.RelayToken.FromString(token)
    except DecodeError:
        raise RelayTokenError("token does not parse") from None
    try:
        relay_public_key.verify(wrapper.signature, SIGNING_PREFIX + wrapper.payload)
    except InvalidSignature:
        raise RelayTokenError("relay signature does not verify (altered, or not from the relay)") from None
    payload = relay_pb2.RelayTokenPayload.FromString(wrapper.payload)
    if payload.recipient_insurer_number not in my_insurer_numbers:
        raise RelayTokenError(f"token is addressed to insurer {payload.recipient_insurer_number}, not to us")
    now = time.time() if now is None else now
    if not payload.issued_unix - 300 <= now <= payload.expires_unix:
        raise RelayTokenError("token expired")
    try:
        sealed = relay_pb2.SealedMember.FromString(my_private_key.decrypt(payload.sealed_member, _OAEP))
    except (ValueError, DecodeError):
        raise RelayTokenError("member number cannot be decrypted with our key") from None
    if sealed.token_id != payload.token_id or sealed.recipient_insurer_number != payload.recipient_insurer_number:
        raise RelayTokenError("sealed part belongs to another token")
    return sealed.member, payload


# --- keys ------------------------------------------------------------------------


def load_signing_key(path: str) -> ed25519.Ed25519PrivateKey:
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return key


def load_public_key(path: str) -> ed25519.Ed25519PublicKey:
    with open(path, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def load_private_key(path: str) -> rsa.RSAPrivateKey:
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: not an RSA key")
    return key


def insurer_keys_from_certificates(paths: list[str]) -> dict[str, rsa.RSAPublicKey]:
    """insurer number -> public key, from onshi insurer client certificates."""
    keys: dict[str, rsa.RSAPublicKey] = {}
    for path in paths:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        roles, codes = pki.role_and_codes(cert)
        key = cert.public_key()
        # relay.proto's sealing-key: RSA of 2048 bits or more (an insurer with
        # another key gets no token; FindInsurer logs it as no-key=).
        if roles != {"insurer"} or not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
            continue
        for number in codes:
            keys[number] = key
    return keys


def insurer_keys_from_pki(pki_dir: str) -> dict[str, rsa.RSAPublicKey]:
    base = os.path.join(pki_dir, "onshi")
    return insurer_keys_from_certificates(
        sorted(
            os.path.join(base, n)
            for n in os.listdir(base)
            if n.startswith("insurer") and n.endswith(".pem") and not n.endswith(".key.pem")
        )
    )
