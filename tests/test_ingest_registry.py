"""The registry match forgives how Japanese is written, never what it says.

Seed 004: every new registration is checked against J-LIS on 漢字氏名, カナ氏名,
生年月日, 性別, 住所. Seed 000 names both sides of the problem: 「外字の扱いが異なる
システム間で、同一人物でも一致しない場合がある。」 (the same person fails to match
between systems that handle non-standard characters differently) and 「4情報が
一致する他人が存在する可能性がある。」 (another person may match on four items).
"""

from __future__ import annotations

import unicodedata

import pytest

from onshi.core import address, kana, kanji, registry
from onshi.v1 import enrollment_pb2 as pb
from onshi.v1 import qualification_pb2 as qpb
from tests import ingest_support as s

R = pb.QuarantineReason
M = pb.MatchRule
SUBSTITUTE, OLD_FORM = M.MATCH_RULE_KANJI_SUBSTITUTE, M.MATCH_RULE_KANJI_OLD_FORM
SMALL, OLD_SPELLING = M.MATCH_RULE_KANA_SMALL_WRITTEN_LARGE, M.MATCH_RULE_KANA_OLD_SPELLING
BLOCK, PLACE_KANA = M.MATCH_RULE_ADDRESS_BLOCK_NOTATION, M.MATCH_RULE_ADDRESS_PLACE_NAME_KANA


def compare(field: registry.Field, registered: str, written: str):
    return field.compare(field.notation(registered), field.notation(written))


@pytest.mark.parametrize(
    "a, b",
    [
        ("山田 太郎", "山田太郎"),
        ("山田\u3000太郎", " 山田太郎 "),
        ("葛\U000e0100飾", "葛飾"),  # an IVS picks a glyph, not a character
        ("ＡＢＣ商事", "ABC商事"),  # full-width Latin
    ],
)
def test_name_notation_is_a_plain_match(a, b):
    assert compare(registry.NAME, a, b) == ()


@pytest.mark.parametrize(
    "registered, written, rules",
    [
        ("髙橋　一郎", "高橋一郎", (SUBSTITUTE,)),  # outside JIS X 0208: its usual substitute
        ("山﨑", "山崎", (SUBSTITUTE,)),
        ("𠮷田", "吉田", (SUBSTITUTE,)),  # outside the BMP too
        ("德永", "徳永", (SUBSTITUTE,)),
        ("濵田", "浜田", (SUBSTITUTE,)),
        ("渡邊", "渡辺", (OLD_FORM,)),  # old form inside JIS X 0208
        ("澤田", "沢田", (OLD_FORM,)),
        ("齋藤　實", "斎藤　実", (OLD_FORM,)),
        ("濵田", "濱田", (SUBSTITUTE, OLD_FORM)),  # 濵 -> 浜 <- 濱: both rules were needed
        ("𠮷田　德郎", "吉田　徳郎", (SUBSTITUTE,)),
        ("辺見", "邊見", (OLD_FORM,)),  # either side may hold the old form
    ],
)
def test_name_matches_substitutes_and_old_forms_and_says_which(registered, written, rules):
    assert compare(registry.NAME, registered, written) == rules


@pytest.mark.parametrize(
    "a, b",
    [
        ("山田太郎", "山田太朗"),  # another given name
        ("山田太郎", "山田次郎"),
        ("山田太郎", "山田太"),
        ("渡邉", "渡辺"),  # variants inside JIS X 0208 that are not old forms stay distinct
        ("嶋田", "島田"),
        ("凜", "凛"),  # both are name characters (人名用漢字) in their own right
        ("玉子", "王子"),  # the MJ map relates these glyphs; names must not
        ("斎藤", "斉藤"),  # 齋→斎 and 齊→斉 are old forms of two different characters
        ("さくら", "サクラ"),  # a kanji-name field written in hiragana is not its katakana
    ],
)
def test_name_keeps_what_differs(a, b):
    assert compare(registry.NAME, a, b) is None
    assert registry.normalize_name(a) != registry.normalize_name(b)


@pytest.mark.parametrize(
    "a, b",
    [
        ("ヤマダ タロウ", "ﾔﾏﾀﾞ ﾀﾛｳ"),  # half-width
        ("ヤマダ タロウ", "やまだ たろう"),  # hiragana
        ("シルヴァ・ジョアン", "シルヴァジョアン"),
    ],
)
def test_kana_notation_is_a_plain_match(a, b):
    assert compare(registry.KANA, a, b) == ()


@pytest.mark.parametrize(
    "registered, written, rules",
    [
        ("シルヴァ", "シルヴア", (SMALL,)),  # a legacy system wrote the small ァ large
        ("キャット", "キヤツト", (SMALL,)),
        ("ケ", "ヶ", (SMALL,)),
        ("ヴィオラ", "ヴイオラ", (SMALL,)),
        ("ヱミ", "エミ", (OLD_SPELLING,)),
        ("ヰド", "イド", (OLD_SPELLING,)),
        ("ヲノ", "オノ", (OLD_SPELLING,)),
        ("ヴァイオリン", "バイオリン", (OLD_SPELLING,)),
        ("ヴィクトル", "ビクトル", (OLD_SPELLING,)),
        ("ヴ", "ブ", (OLD_SPELLING,)),
        ("シルヴァ", "シルバ", (OLD_SPELLING,)),
        ("ヴュー", "ビユー", (SMALL, OLD_SPELLING)),
    ],
)
def test_kana_matches_small_kana_written_large_and_old_spellings(registered, written, rules):
    assert compare(registry.KANA, registered, written) == rules


def test_small_kana_are_folded_whatever_else_applies():
    """The folding-order bug: ヴァ folded to バ before small kana were made
    large, so シルヴァ written シルヴア by a legacy system never matched."""
    assert (
        registry.normalize_kana("シルヴァ") == registry.normalize_kana("シルヴア") == registry.normalize_kana("シルバ")
    )
    assert kana.fold("ｼﾙｳﾞｧ") == kana.fold("しるヴあ")


@pytest.mark.parametrize(
    "a, b",
    [
        ("ヤマダ", "ヤマタ"),  # a dakuten is a different sound
        ("サトウ", "サトー"),  # a long-vowel mark is not ウ
        ("ジ", "ヂ"),
        ("タロウ", "タロ"),
        ("ユウコ", "ヨウコ"),
    ],
)
def test_kana_keeps_what_differs(a, b):
    assert compare(registry.KANA, a, b) is None


@pytest.mark.parametrize(
    "a, b",
    [
        ("東京都千代田区千代田１－１－１", "東京都 千代田区千代田1-1-1"),
        ("千代田1−1ー1", "千代田1‐1―1"),
        ("〒100-0001 東京都千代田区千代田1-1-1", "東京都千代田区千代田1-1-1"),
        ("〒1000001東京都千代田区千代田1-1-1", "東京都千代田区千代田１－１－１"),
    ],
)
def test_address_notation_is_a_plain_match(a, b):
    assert compare(registry.ADDRESS, a, b) == ()


@pytest.mark.parametrize(
    "registered, written, rules",
    [
        ("神奈川県茅ヶ崎市東海岸北一丁目2番3号", "神奈川県茅ヶ崎市東海岸北1-2-3", (BLOCK,)),
        ("東海岸北1丁目2番3号", "東海岸北一丁目二番三号", (BLOCK,)),
        ("東海岸北1丁目2番3号", "東海岸北１丁目２－３", (BLOCK,)),
        ("東海岸北一丁目二番三", "東海岸北1-2-3", (BLOCK,)),
        ("大字上郷123番地の4", "大字上郷123-4", (BLOCK,)),
        ("大字上郷123番地4", "大字上郷123の4", (BLOCK,)),
        ("札幌市中央区北一条西二丁目3番4号", "札幌市中央区北1条西2-3-4", (BLOCK,)),
        ("東海岸北1丁目2番3号　ハイツ305号室", "東海岸北1-2-3 ハイツ305号室", (BLOCK,)),
        ("一丁目十二番二十三号", "1-12-23", (BLOCK,)),
        ("神奈川県茅ヶ崎市", "神奈川県茅ケ崎市", (PLACE_KANA,)),
        ("千代田区霞が関1-2", "千代田区霞ヶ関1-2", (PLACE_KANA,)),
        ("千代田区丸の内1-1", "千代田区丸ノ内1-1", (PLACE_KANA,)),
        ("神奈川県茅ヶ崎市東海岸北一丁目2番3号", "神奈川県茅ケ崎市東海岸北1-2-3", (BLOCK, PLACE_KANA)),
        ("宮﨑県宮﨑市", "宮崎県宮崎市", (SUBSTITUTE,)),
    ],
)
def test_address_matches_block_notations_and_place_name_kana(registered, written, rules):
    assert compare(registry.ADDRESS, registered, written) == rules


@pytest.mark.parametrize(
    "a, b",
    [
        ("千代田1-1-1", "千代田1-1-10"),  # another number in the same town
        ("千代田一丁目1-1", "千代田二丁目1-1"),
        ("東海岸北1丁目2番3号", "東海岸北1丁目2番4号"),
        ("1-2-3 ハイツ305号室", "1-2-3 ハイツ306号室"),
        ("1-2-3 ハイツ305号室", "1-2-3"),  # a room number is part of the address
        ("千代田区一番町1-2", "千代田区二番町1-2"),  # 一番町 is a town's name, not a block
        ("茅ヶ崎市東海岸北1-2-3", "茅ヶ崎市東海岸南1-2-3"),
        ("123番地", "12-3"),
    ],
)
def test_address_keeps_what_differs(a, b):
    assert compare(registry.ADDRESS, a, b) is None


def test_town_names_keep_their_kanji_numerals():
    assert address.fold("千代田区一番町1-2") == "千代田区一番町1-2"
    assert address.fold("中央区八丁堀二丁目3番地の4") == "中央区八丁堀2-3-4"
    assert address.fold("千代田区九段南一丁目") == "千代田区九段南1"
    assert [address.kanji_number(t) for t in ("一", "十", "十二", "二十三", "百五", "一〇一", "千二百")] == [
        1,
        10,
        12,
        23,
        105,
        101,
        1200,
    ]


def test_verdict_names_every_differing_field_and_every_loose_rule():
    r = s.resident(3)
    assert registry.mismatches(r, s.person(r)) == []  # written differently, same facts
    p = s.person(r)
    p.name, p.name_kana, p.sex, p.address = "別人", "ベツジン", 3 - r.sex, "大阪府"
    p.birth_date.year += 1
    assert registry.mismatches(r, p) == [
        R.QUARANTINE_REASON_NAME_MISMATCH,
        R.QUARANTINE_REASON_KANA_MISMATCH,
        R.QUARANTINE_REASON_BIRTH_DATE_MISMATCH,
        R.QUARANTINE_REASON_SEX_MISMATCH,
        R.QUARANTINE_REASON_ADDRESS_MISMATCH,
    ]
    r = pb.Resident(
        resident_id=s.resident_id(1),
        name="渡邊　髙志",
        name_kana="ワタナベ　タカシ",
        birth_date=s.date("1980-02-03"),
        sex=qpb.SEX_MALE,
        address="神奈川県茅ヶ崎市東海岸北一丁目2番3号",
    )
    p = qpb.Person(
        name="渡辺 高志",
        name_kana="ﾜﾀﾅﾍﾞ ﾀｶｼ",
        birth_date=s.date("1980-02-03"),
        sex=qpb.SEX_MALE,
        address="神奈川県茅ケ崎市東海岸北1-2-3",
    )
    v = registry.verdict(r, p)
    assert v.reasons == ()
    assert v.loose == (("person.name", (SUBSTITUTE, OLD_FORM)), ("person.address", (BLOCK, PLACE_KANA)))
    assert [(m.field, list(m.rules)) for m in v.loose_matches()] == [
        ("person.name", [SUBSTITUTE, OLD_FORM]),
        ("person.address", [BLOCK, PLACE_KANA]),
    ]
    assert registry.stored_verdict(r.SerializeToString(), p, p.SerializeToString()) == v


def _in_jisx0208(ch: str) -> bool:
    try:
        ch.encode("iso2022_jp")
    except UnicodeEncodeError:
        return False
    return True


def test_variant_table_relates_only_what_its_rules_say():
    """Every substitute row maps a character outside JIS X 0208 into it; every
    old-form row stays inside it; nothing maps a character to itself."""
    rows = [
        line.split("\t")
        for line in kanji.TABLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert len(rows) > 10_000
    for variant, forms, rule in rows:
        assert len(variant) == 1 and variant not in forms and unicodedata.category(variant) == "Lo"
        assert all(_in_jisx0208(f) for f in forms), (variant, forms)
        assert _in_jisx0208(variant) == (rule == kanji.OLD_FORM), (variant, rule)
    assert {v for v, _, r in rows if r == kanji.OLD_FORM} >= set("邊澤國齋濱廣櫻惠眞龍")
    assert not {v for v, _, _ in rows} & set("玉王書邉嶋冨凜凛斎斉")


def test_resident_validation():
    assert registry.normalize_resident_id("１２３４５６７８９０１") == "12345678901"
    assert registry.normalize_resident_id("1234567890") is None
    bad = pb.Resident(resident_id="x", sex=qpb.SEX_UNSPECIFIED)
    fields = {f for f, _ in registry.resident_violations(bad)}
    assert fields == {
        "residents.resident_id",
        "residents.name",
        "residents.name_kana",
        "residents.sex",
        "residents.birth_date",
        "residents.address",
    }
