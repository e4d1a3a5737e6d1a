"""Shared pieces of the trust tests: one `onshi pki init` output per test session,
a small store whose persons hold the PKI's demo cards, real mTLS servers on
127.0.0.1 port 0, and card proofs signed as a card would sign them."""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import os
import shutil
import tempfile
import time

import grpc
from cryptography.hazmat.primitives import serialization

from onshi.core import cardproof, dates, pki
from onshi.core.writer import Writer
from onshi.server import auth
from onshi.v1 import eligibility_pb2
from onshi.v1 import qualification_pb2 as qpb

D = dt.date
FACILITY = pki.FACILITY_CODES[0]
OTHER_FACILITY = pki.FACILITY_CODES[1]
INSURER_A = pki.INSURERS["insurer-a"][0]  # 06139992 union plan
INSURER_B = pki.INSURERS["insurer-b"][0]  # 01130012 協会けんぽ
INSURER_C = pki.INSURERS["insurer-c"][0]  # 31130016 mutual aid


@functools.cache
def pki_dir() -> str:
    """One test PKI for the whole session (RSA key generation is the slow part)."""
    path = tempfile.mkdtemp(prefix="onshi-pki-")
    atexit.register(shutil.rmtree, path, True)
    pki.init(path)
    return path


def serial_of(card: str) -> int:
    return pki.CARDS[card][0] if card != "forged" else pki.FORGED_CARD[1]


def serial_key(card: str) -> bytes:
    return serial_of(card).to_bytes(20, "big")


def person(name, kana, birth, sex=1, address="東京都千代田区千代田1-1"):
    return qpb.Person(
        name=name, name_kana=kana, sex=sex, birth_date=dates.to_proto(birth), address=address, postcode="1000001"
    )


def qual(insurer, symbol, number, branch, acquired, lost=None):
    return qpb.Qualification(
        insurer_number=insurer,
        insurer_name=f"保険者{insurer}",
        symbol=symbol,
        number=number,
        branch=branch,
        relationship=1,
        acquisition_date=dates.to_proto(acquired),
        loss_date=dates.to_proto(lost) if lost else None,
        burden_ratio_percent=30,
    )


# link ID -> (person, qualifications, card name or None)
PEOPLE = {
    1: (
        person("山田太郎", "ヤマダタロウ", D(1970, 1, 2)),
        [qual(INSURER_A, "A1", "100", "00", D(2020, 4, 1)), qual(INSURER_B, "B1", "200", "00", D(2021, 4, 1))],
        "valid-1",
    ),
    2: (
        person("佐藤花子", "サトウハナコ", D(1985, 3, 4), sex=2, address="大阪府大阪市北区1-2"),
        [qual(INSURER_B, "B2", "300", "01", D(2019, 1, 1))],
        "valid-2",
    ),
    3: (
        person("鈴木一郎", "スズキイチロウ", D(1990, 5, 6)),
        [qual(INSURER_C, "C1", "400", "00", D(2018, 1, 1))],
        "valid-3",
    ),
    4: (
        person("高橋次郎", "タカハシジロウ", D(1950, 7, 8)),
        [qual(INSURER_A, "A1", "500", "00", D(2015, 1, 1))],
        "expiring",
    ),
    5: (
        person("田中三郎", "タナカサブロウ", D(1960, 9, 10)),
        [qual(INSURER_B, "B3", "600", "00", D(2016, 1, 1))],
        "expired",
    ),
    6: (
        person("伊藤四郎", "イトウシロウ", D(1975, 11, 12)),
        [qual(INSURER_B, "B3", "700", "00", D(2016, 1, 1))],
        "revoked",
    ),
    7: (
        person("渡辺五郎", "ワタナベゴロウ", D(1980, 12, 1)),
        [qual(INSURER_B, "B3", "800", "00", D(2016, 1, 1))],
        "not-yet-valid",
    ),
    # Same kana, sex and birth date, neighbouring addresses: the lookup by basic
    # information must tell them apart by the full address or the kanji name.
    8: (
        person("中村六郎", "ナカムラロクロウ", D(1965, 2, 3), address="東京都港区芝公園4-2-8"),
        [qual(INSURER_C, "C2", "900", "00", D(2017, 1, 1))],
        None,
    ),
    9: (
        person("中村六朗", "ナカムラロクロウ", D(1965, 2, 3), address="東京都港区芝公園4-2-9"),
        [qual(INSURER_A, "A2", "910", "00", D(2017, 1, 1))],
        None,
    ),
}


def build_store(path: str) -> None:
    writer = Writer(path)
    try:
        for link_id, (p, quals, card) in PEOPLE.items():

            def change(t, link_id=link_id, p=p, quals=quals, card=card):
                t.reserve_link_ids(link_id)
                t.put_history(link_id, p, quals)
                if card:
                    t.link_card(serial_key(card), link_id)

            writer.apply(change)
    finally:
        writer.close()


# --- TLS ---------------------------------------------------------------------------


def server_credentials() -> grpc.ServerCredentials:
    ca, cert, key = auth.pki_paths(pki_dir(), "server")
    return auth.server_credentials(cert, key, ca)


def client_credentials(stem: str | None, *, rogue: bool = False) -> grpc.ChannelCredentials:
    """Credentials of an onshi client identity (None = no client certificate)."""
    ca = os.path.join(pki_dir(), "onshi", "ca.pem")
    if stem is None:
        return auth.channel_credentials(ca)
    base = os.path.join(pki_dir(), "rogue" if rogue else "onshi")
    return auth.channel_credentials(ca, os.path.join(base, stem + ".pem"), os.path.join(base, stem + ".key.pem"))


def secure_channel(port: int, stem: str | None, *, rogue: bool = False) -> grpc.Channel:
    return grpc.secure_channel(f"127.0.0.1:{port}", client_credentials(stem, rogue=rogue))


def facility_stem(code: str = FACILITY) -> str:
    return pki.client_stem("facility", code)


# --- card proofs ---------------------------------------------------------------------


@functools.cache
def card_files(card: str) -> tuple[bytes, object]:
    base = os.path.join(pki_dir(), "cards", card)
    with open(base + ".der", "rb") as f:
        der = f.read()
    with open(base + ".key.pem", "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return der, key


def proof_fields(
    card: str,
    facility: str = FACILITY,
    *,
    timestamp: int | None = None,
    nonce: bytes | None = None,
    sign_facility: str | None = None,
    purpose: str = cardproof.PURPOSE_CHECK_BY_CARD,
) -> dict:
    """What a terminal sends: the card's certificate, the challenge, the card's
    signature (made for `purpose`: CheckByCard unless said otherwise)."""
    der, key = card_files(card)
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or os.urandom(16)
    signature = cardproof.sign_challenge(key, purpose, sign_facility or facility, ts, nonce)
    return dict(
        card_certificate=der,
        card_signature=signature,
        challenge=eligibility_pb2.CardChallenge(facility_code=facility, timestamp_unix=ts, nonce=nonce),
    )


def card_request(card: str, facility: str = FACILITY, **kw) -> eligibility_pb2.CheckByCardRequest:
    return eligibility_pb2.CheckByCardRequest(**proof_fields(card, facility, **kw))


def access_proof_fields(card: str, facility: str = FACILITY, **kw) -> dict:
    """A card proof made for ListMyAccess."""
    return proof_fields(card, facility, purpose=cardproof.PURPOSE_LIST_MY_ACCESS, **kw)
