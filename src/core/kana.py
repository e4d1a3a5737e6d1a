"""Kana names as insurers' systems write them: one place for kana folding.

Two levels:

* `notation` — how a string was typed, never what it says: width (半角ｶﾅ),
  compatibility forms (NFKC), variation selectors, spaces and the middle dot
  between given and family name, hiragana vs katakana.
* the loose folds, in this order (`LOOSE_FOLDS`):
  1. small kana written large (ァ→ア, ッ→ツ, ャ→ヤ, ヶ→ケ ...): legacy systems
     had no small kana, so キャット arrives as キヤツト and シルヴァ as シルヴア;
  2. old spellings: ヰ/ヱ/ヲ → イ/エ/オ, and the ヴ row written with バ-row kana
     (ヴァ/ヴア → バ, ヴ → ブ).
  The ヴ-row rule reads ヴ + vowel with the vowel small or written large:
  folding ヴァ → バ before the small kana (as this module once did) left ヴア
  as ブア, so シルヴァ written シルヴア never matched.

Nothing else is folded: ジ/ヂ, a long-vowel mark vs ウ (サトー/サトウ), a
dakuten, a missing kana all stay differences.
"""

from __future__ import annotations

import functools
import unicodedata

# Variation selectors: VS1-16 and the ideographic variation sequences' VS17-256.
VARIATION_SELECTORS = dict.fromkeys(list(range(0xFE00, 0xFE10)) + list(range(0xE0100, 0xE01F0)))

_HIRAGANA_TO_KATAKANA = {c: c + 0x60 for c in range(0x3041, 0x3097)} | {ord("ゝ"): "ヽ", ord("ゞ"): "ヾ"}
_SEPARATORS = dict.fromkeys(map(ord, "・"))  # NFKC already made ･ (half-width) into ・
_SMALL_TO_LARGE = str.maketrans(
    "ァィゥェォッャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ",
    "アイウエオツヤユヨワカケクシストヌハヒフヘホムラリルレロ",
)
_OLD_KANA = str.maketrans("ヰヱヲヷヸヹヺ", "イエオバビベボ")
# ヴ + vowel first, its vowel small or written large (ヴァ/ヴア), then a bare ヴ.
_VU_PAIRS = (
    ("ヴァ", "バ"),
    ("ヴア", "バ"),
    ("ヴィ", "ビ"),
    ("ヴイ", "ビ"),
    ("ヴェ", "ベ"),
    ("ヴエ", "ベ"),
    ("ヴォ", "ボ"),
    ("ヴオ", "ボ"),
    ("ヴュ", "ビュ"),
    ("ヴユ", "ビユ"),
    ("ヴ", "ブ"),
)

SMALL_WRITTEN_LARGE = "small_kana_written_large"
OLD_SPELLING = "kana_old_spelling"


def strip_notation(text: str) -> str:
    """Width, compatibility forms, variation selectors and spaces: what every
    field's notation level drops (names, kana and addresses alike)."""
    return "".join(unicodedata.normalize("NFKC", text.translate(VARIATION_SELECTORS)).split())


@functools.lru_cache(maxsize=1 << 16)  # names repeat; the writer is one process
def notation(text: str) -> str:
    """Kana as typed: width, spaces, middle dot, hiragana/katakana."""
    return strip_notation(text).translate(_SEPARATORS).translate(_HIRAGANA_TO_KATAKANA)


def small_to_large(text: str) -> str:
    return text.translate(_SMALL_TO_LARGE)


def old_spelling(text: str) -> str:
    for old, new in _VU_PAIRS:
        text = text.replace(old, new)
    return text.translate(_OLD_KANA)


LOOSE_FOLDS = ((SMALL_WRITTEN_LARGE, small_to_large), (OLD_SPELLING, old_spelling))


@functools.lru_cache(maxsize=1 << 16)
def fold(text: str) -> str:
    """Every kana rule, in order: the key two kana names must share to match."""
    text = notation(text)
    for _, step in LOOSE_FOLDS:
        text = step(text)
    return text
