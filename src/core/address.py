"""Japanese addresses as insurers' systems write them: one place for address notation.

Two levels:

* `notation` — how the string was typed: width (NFKC: １ → 1), variation
  selectors, spaces (a space between two digits separates them: 3 101 is
  3-101), every dash character as "-", a leading postcode (〒253-0054);
* the loose folds, in this order (`LOOSE_FOLDS`):
  1. block numbers (`block_numbers`): 一丁目2番3号, 1丁目2-3, 1-2-3 and
     一丁目二番三号 are one address; 123番地の4 is 123-4; kanji numerals in
     block numbers and before 条/線/地割 (北一条 = 北1条) become digits. Only
     where a block marker or a hyphen says it is a number: 一番町, 八丁堀,
     九段 keep their kanji;
  2. the kana inside place names (`place_name_kana`): ヶ/ケ/ヵ/が/ガ between two
     kanji (茅ヶ崎 = 茅ケ崎, 霞が関 = 霞ヶ関), の/ノ between two kanji (丸の内 =
     丸ノ内);
  3. kanji variants (onshi.core.kanji): 﨑 written 崎, 澤 written 沢.

Every number stays: another block, building or room number is another address.
A maintained Japanese address normaliser was considered: those on PyPI
(normalize-japanese-addresses, japanese-address-parser-py) fetch their town
lists over the network at run time, which the writer may not do.
"""

from __future__ import annotations

import functools
import re

from . import kana

_DASHES = re.compile("[\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc\uff70\u2500\u2501\u2043\ufe63\u002d]+")
_POSTCODE = re.compile(r"^〒?\d{3}-?\d{4}(?!\d)")
_DIGIT_SPACE_DIGIT = re.compile(r"(?<=\d)\s+(?=\d)")

_KANJI_DIGITS = {c: i for i, c in enumerate("〇一二三四五六七八九")}
_KANJI_UNITS = {"十": 10, "百": 100, "千": 1000}
_NUM = "[〇一二三四五六七八九十百千]+"
# A marker says the number before it is a block number (番 of 一番町 and 号 of 101号室 do not).
_MARKER = r"丁目|番地|番(?![町丁])|号(?![室棟館])|条|線|地割|-|の(?=[0-9〇一二三四五六七八九])"
_KANJI_BEFORE_MARKER = re.compile(f"({_NUM})(?={_MARKER})")
_KANJI_AFTER_BLOCK = re.compile(f"(?<=[0-9]-)({_NUM})")
_BLOCK_SEPARATOR = re.compile(r"(?<=[0-9])(?:丁目|番地の?|番(?![町丁])|の(?=[0-9]))")
_BLOCK_LAST = re.compile(r"(?<=[0-9])号(?![室棟館])")
_HYPHENS = re.compile("-+")
_DANGLING_HYPHEN = re.compile(r"-(?![0-9])")

_KANJI = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f々〆]"
_KE = re.compile(f"(?<={_KANJI})[ヶケヵがガ](?={_KANJI})")
_NO = re.compile(f"(?<={_KANJI})[のノ之](?={_KANJI})")

BLOCK_NOTATION = "block_notation"
PLACE_NAME_KANA = "place_name_kana"


@functools.lru_cache(maxsize=1 << 16)  # towns and streets repeat; the writer is one process
def notation(text: str) -> str:
    text = _DIGIT_SPACE_DIGIT.sub("-", text)
    text = _DASHES.sub("-", kana.strip_notation(text))
    return _POSTCODE.sub("", text)


def kanji_number(text: str) -> int:
    """一 → 1, 十二 → 12, 二十三 → 23, 百五 → 105, 一〇一 → 101."""
    if not any(c in _KANJI_UNITS for c in text):
        return int("".join(str(_KANJI_DIGITS[c]) for c in text))
    total = digit = 0
    for c in text:
        if c in _KANJI_UNITS:
            total += (digit or 1) * _KANJI_UNITS[c]
            digit = 0
        else:
            digit = _KANJI_DIGITS[c]
    return total + digit


def _to_digits(match: re.Match[str]) -> str:
    return str(kanji_number(match.group(1)))


def block_numbers(text: str) -> str:
    """Block numbers as digits and hyphens (text after `notation`)."""
    text = _KANJI_BEFORE_MARKER.sub(_to_digits, text)
    text = _BLOCK_SEPARATOR.sub("-", text)
    text = _BLOCK_LAST.sub("-", text)
    text = _KANJI_AFTER_BLOCK.sub(_to_digits, text)
    text = _HYPHENS.sub("-", text)
    return _DANGLING_HYPHEN.sub("", text)


def place_name_kana(text: str) -> str:
    return _NO.sub("ノ", _KE.sub("ケ", text))


LOOSE_FOLDS = ((BLOCK_NOTATION, block_numbers), (PLACE_NAME_KANA, place_name_kana))


@functools.lru_cache(maxsize=1 << 16)
def fold(text: str) -> str:
    """Every address rule but kanji variants, in order (onshi.core.registry adds those)."""
    text = notation(text)
    for _, step in LOOSE_FOLDS:
        text = step(text)
    return text
