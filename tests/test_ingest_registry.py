"""The registry match forgives how basic information was written, never what it says."""

from __future__ import annotations

import pytest

from onshi.core import registry
from onshi.v1 import enrollment_pb2 as pb
from onshi.v1 import qualification_pb2 as qpb
from tests import ingest_support as s

R = pb.QuarantineReason


@pytest.mark.parametrize("a, b", [
    ("山田 太郎", "山田太郎"),
    ("山田\u3000太郎", " 山田太郎 "),
    ("葛\U000E0100飾", "葛飾"),              # an IVS picks a glyph, not a character
    ("ＡＢＣ商事", "ABC商事"),                # full-width Latin
])
def test_name_forgives_width_spaces_and_variation_selectors(a, b):
    assert registry.normalize_name(a) == registry.normalize_name(b)


@pytest.mark.parametrize("a, b", [
    ("髙橋", "高橋"),   # a different (old-form) kanji is a different name: a person must check it
    ("渡邉", "渡辺"),
    ("山田太郎", "山田太朗"),
    ("山田太郎", "山田太"),
])
def test_name_is_not_fuzzy(a, b):
    assert registry.normalize_name(a) != registry.normalize_name(b)


@pytest.mark.parametrize("a, b", [
    ("ヤマダ タロウ", "ﾔﾏﾀﾞ ﾀﾛｳ"),        # half-width
    ("ヤマダ タロウ", "やまだ たろう"),    # hiragana
    ("キャット", "キヤツト"),              # small kana as written by old systems
    ("ヱミ", "エミ"),                     # old form ヱ
    ("ヰド", "イド"),                     # old form ヰ
    ("ヲノ", "オノ"),
    ("ヴァイオリン", "バイオリン"),        # ヴ-row
    ("ヴィクトル", "ビクトル"),
    ("ヴ", "ブ"),
    ("ケ", "ヶ"),
])
def test_kana_forgives_old_and_small_forms(a, b):
    assert registry.normalize_kana(a) == registry.normalize_kana(b)


@pytest.mark.parametrize("a, b", [
    ("ヤマダ", "ヤマタ"),      # a dakuten is a different sound
    ("サトウ", "サトー"),      # a long-vowel mark is not ウ (not fuzzy)
    ("ジ", "ヂ"),             # not folded: beyond the forms above
    ("タロウ", "タロ"),
])
def test_kana_is_not_fuzzy(a, b):
    assert registry.normalize_kana(a) != registry.normalize_kana(b)


def test_address_forgives_dashes_and_width_only():
    assert registry.normalize_address("東京都千代田区千代田１－１－１") == registry.normalize_address("東京都 千代田区千代田1-1-1")
    assert registry.normalize_address("千代田1−1ー1") == registry.normalize_address("千代田1-1-1")
    assert registry.normalize_address("千代田1-1-1") != registry.normalize_address("千代田1-1-10")
    assert registry.normalize_address("千代田一丁目1-1") != registry.normalize_address("千代田1丁目1-1")


def test_mismatches_names_every_differing_field():
    r = s.resident(3)
    assert registry.mismatches(r, s.person(r)) == []  # written differently, same facts
    p = s.person(r)
    p.name, p.name_kana, p.sex, p.address = "別人", "ベツジン", 3 - r.sex, "大阪府"
    p.birth_date.year += 1
    assert registry.mismatches(r, p) == [R.QUARANTINE_REASON_NAME_MISMATCH, R.QUARANTINE_REASON_KANA_MISMATCH,
                                         R.QUARANTINE_REASON_BIRTH_DATE_MISMATCH, R.QUARANTINE_REASON_SEX_MISMATCH,
                                         R.QUARANTINE_REASON_ADDRESS_MISMATCH]


def test_resident_validation():
    assert registry.normalize_resident_id("１２３４５６７８９０１") == "12345678901"
    assert registry.normalize_resident_id("1234567890") is None
    bad = pb.Resident(resident_id="x", sex=qpb.SEX_UNSPECIFIED)
    fields = {f for f, _ in registry.resident_violations(bad)}
    assert fields == {"residents.resident_id", "residents.name", "residents.name_kana", "residents.sex",
                      "residents.birth_date", "residents.address"}
