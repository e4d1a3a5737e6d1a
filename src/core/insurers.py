"""A synthetic but realistic catalogue of ~3,000 insurers (保険者) for `onshi gen`.

Numbers follow the MHLW layout: 法別番号 (2) + 都道府県番号 (2) + 保険者別番号 (3)
+ check digit for 8-digit insurers; 都道府県番号 (2) + 保険者別番号 (3) + check digit
for the 6-digit 国民健康保険 (municipal and union). Scheme codes: 01 協会けんぽ,
02 船員保険, 06 健保組合, 31-34 共済, 39 後期高齢者医療. Every number carries a valid
check digit (identifiers.with_check_digit).

Municipal codes stay below 300 and 国保組合 codes use 300-399, so the two kinds of
6-digit number can never collide; the build asserts every number is unique.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .identifiers import with_check_digit

# (code, name, population in 10,000s (2020 census, rounded), first postcode digits)
PREFECTURES = (
    (1, "北海道", 522, "06"),
    (2, "青森県", 124, "03"),
    (3, "岩手県", 121, "02"),
    (4, "宮城県", 230, "98"),
    (5, "秋田県", 96, "01"),
    (6, "山形県", 107, "99"),
    (7, "福島県", 183, "96"),
    (8, "茨城県", 287, "31"),
    (9, "栃木県", 193, "32"),
    (10, "群馬県", 194, "37"),
    (11, "埼玉県", 734, "33"),
    (12, "千葉県", 628, "26"),
    (13, "東京都", 1405, "10"),
    (14, "神奈川県", 924, "22"),
    (15, "新潟県", 220, "95"),
    (16, "富山県", 103, "93"),
    (17, "石川県", 113, "92"),
    (18, "福井県", 77, "91"),
    (19, "山梨県", 81, "40"),
    (20, "長野県", 205, "38"),
    (21, "岐阜県", 198, "50"),
    (22, "静岡県", 364, "42"),
    (23, "愛知県", 754, "45"),
    (24, "三重県", 177, "51"),
    (25, "滋賀県", 141, "52"),
    (26, "京都府", 258, "60"),
    (27, "大阪府", 884, "53"),
    (28, "兵庫県", 547, "65"),
    (29, "奈良県", 133, "63"),
    (30, "和歌山県", 92, "64"),
    (31, "鳥取県", 55, "68"),
    (32, "島根県", 67, "69"),
    (33, "岡山県", 189, "70"),
    (34, "広島県", 280, "73"),
    (35, "山口県", 134, "75"),
    (36, "徳島県", 72, "77"),
    (37, "香川県", 95, "76"),
    (38, "愛媛県", 133, "79"),
    (39, "高知県", 69, "78"),
    (40, "福岡県", 513, "81"),
    (41, "佐賀県", 81, "84"),
    (42, "長崎県", 131, "85"),
    (43, "熊本県", 174, "86"),
    (44, "大分県", 113, "87"),
    (45, "宮崎県", 107, "88"),
    (46, "鹿児島県", 160, "89"),
    (47, "沖縄県", 147, "90"),
)

# Scheme names, used as Insurer.scheme.
KYOKAI = "協会けんぽ"
SEAMEN = "船員保険"
UNION = "健保組合"
MUTUAL_AID = "共済組合"
NHI_UNION = "国保組合"
NHI = "市町村国保"
LATE_ELDERLY = "後期高齢者医療"
EMPLOYEE_SCHEMES = (KYOKAI, SEAMEN, UNION, MUTUAL_AID)

_PLACE_HEAD = "東西南北中上下大小新高本若桜松竹梅白黒青赤金石岩宮神鶴亀朝日月星富福吉長古千八三美清豊広平春秋"
_PLACE_TAIL = "川山田野原島沢浜崎岡谷津井瀬里森林倉尾木見部江浦城坂"
_TOWN_TAIL = ("町", "台", "丘", "ヶ丘", "本町", "元町", "新町", "が丘")
_COMPANY_HEAD = (
    "日本",
    "東日本",
    "西日本",
    "大和",
    "富士",
    "朝日",
    "三和",
    "昭和",
    "東亜",
    "太平洋",
    "北陸",
    "中部",
    "関西",
    "九州",
    "東洋",
    "日東",
    "明治",
    "大同",
    "第一",
    "新日本",
    "帝都",
    "中央",
    "北海",
    "瀬戸内",
    "湘南",
    "武蔵",
    "常盤",
    "相模",
    "信越",
    "山陽",
    "東邦",
    "協和",
    "共栄",
    "ひかり",
    "みらい",
    "さくら",
    "あおば",
    "ときわ",
    "アルファ",
    "ユニオン",
    "グローバル",
)
_INDUSTRY = (
    "電機",
    "電工",
    "化学",
    "製薬",
    "印刷",
    "商事",
    "物産",
    "運輸",
    "通運",
    "建設",
    "食品",
    "製菓",
    "乳業",
    "百貨店",
    "鉄鋼",
    "自動車",
    "機械",
    "精機",
    "硝子",
    "繊維",
    "紡績",
    "製紙",
    "電力",
    "ガス",
    "証券",
    "銀行",
    "生命保険",
    "損害保険",
    "情報システム",
    "ソフトウェア",
    "放送",
    "新聞",
    "電鉄",
    "航空",
    "海運",
    "倉庫",
    "不動産",
    "薬品",
    "化粧品",
    "医療機器",
    "重工業",
    "電子",
    "光学",
    "通信",
)
_GENERAL_UNION = (
    "情報サービス産業",
    "電設工業",
    "機械金属",
    "印刷製本",
    "食品卸",
    "自動車販売",
    "薬業",
    "建設業",
    "トラック",
    "商工会",
    "信用金庫",
    "農協",
)
_MINISTRIES = (
    "衆議院",
    "参議院",
    "内閣",
    "総務省",
    "法務省",
    "外務省",
    "財務省",
    "文部科学省",
    "厚生労働省",
    "農林水産省",
    "経済産業省",
    "国土交通省",
    "防衛省",
    "裁判所",
    "会計検査院",
)
_NHI_UNIONS = ("医師", "歯科医師", "薬剤師", "建設", "食品販売", "理容美容", "税理士", "弁護士")
_NATIONAL_NHI_UNIONS = ("全国土木建築", "全国建設工事業", "全国左官タイル塗装業", "文芸美術", "全国板金業")


@dataclass(frozen=True, slots=True)
class Insurer:
    number: str
    name: str
    scheme: str
    prefecture: int
    # How this insurer writes 記号/番号 (see gen.py: symbol_number): kept per insurer
    # because real insurers each have one house style.
    style: int = 0


@dataclass(slots=True)
class Municipality:
    prefecture: int
    code: str  # 3 digits, unique within the prefecture, < 300
    name: str  # e.g. 高松市
    postcode_head: str  # 3 digits
    towns: tuple[str, ...]
    nhi: Insurer
    late_elderly: Insurer


@dataclass(slots=True)
class Catalogue:
    insurers: list[Insurer] = field(default_factory=list)
    by_scheme: dict[str, list[Insurer]] = field(default_factory=dict)
    municipalities: list[Municipality] = field(default_factory=list)

    def add(self, insurer: Insurer) -> Insurer:
        self.insurers.append(insurer)
        self.by_scheme.setdefault(insurer.scheme, []).append(insurer)
        return insurer


def _place(rng: random.Random) -> str:
    return rng.choice(_PLACE_HEAD) + rng.choice(_PLACE_TAIL)


def build_catalogue(rng: random.Random, municipalities: int = 760, unions: int = 1100) -> Catalogue:
    """About 3,000 insurers: 47 協会けんぽ branches, 船員保険, ~1,100 健保組合, ~200
    共済, ~130 国保組合, and per municipality one 市町村国保 and one 後期高齢者医療
    number (the 広域連合 of the prefecture issues one number per municipality)."""
    cat = Catalogue()
    total_pop = sum(p[2] for p in PREFECTURES)
    for code, pref, _pop, _ in PREFECTURES:
        cat.add(Insurer(with_check_digit(f"01{code:02d}001"), f"全国健康保険協会{pref}支部", KYOKAI, code, 0))
    cat.add(Insurer(with_check_digit("0213001"), "全国健康保険協会船員保険部", SEAMEN, 13, 0))

    # 健保組合: concentrated in Tokyo and Osaka like the real ~1,380.
    weights = [p[2] * (4 if p[0] in (13, 27) else 1) for p in PREFECTURES]
    seen_names: set[str] = set()
    next_code = {p[0]: 1 for p in PREFECTURES}
    while len(cat.by_scheme.get(UNION, ())) < unions:
        pref_code = rng.choices(PREFECTURES, weights)[0][0]
        if next_code[pref_code] > 999:
            continue
        if rng.random() < 0.12:
            name = f"{PREFECTURES[pref_code - 1][1]}{rng.choice(_GENERAL_UNION)}健康保険組合"
        else:
            name = f"{rng.choice(_COMPANY_HEAD)}{rng.choice(_INDUSTRY)}健康保険組合"
        if name in seen_names:
            continue
        seen_names.add(name)
        number = with_check_digit(f"06{pref_code:02d}{next_code[pref_code]:03d}")
        next_code[pref_code] += 1
        cat.add(Insurer(number, name, UNION, pref_code, rng.randrange(4)))

    # 共済: 31 国家公務員, 32 地方公務員等, 33 警察, 34 公立学校・私学.
    for i, ministry in enumerate(_MINISTRIES):
        cat.add(Insurer(with_check_digit(f"3113{i + 1:03d}"), f"{ministry}共済組合", MUTUAL_AID, 13, 1))
    for code, pref, _, _ in PREFECTURES:
        cat.add(Insurer(with_check_digit(f"32{code:02d}001"), f"地方職員共済組合{pref}支部", MUTUAL_AID, code, 1))
        cat.add(Insurer(with_check_digit(f"32{code:02d}002"), f"{pref}市町村職員共済組合", MUTUAL_AID, code, 1))
        cat.add(Insurer(with_check_digit(f"33{code:02d}001"), f"警察共済組合{pref}支部", MUTUAL_AID, code, 1))
        cat.add(Insurer(with_check_digit(f"34{code:02d}001"), f"公立学校共済組合{pref}支部", MUTUAL_AID, code, 1))
    cat.add(Insurer(with_check_digit("3413002"), "日本私立学校振興・共済事業団", MUTUAL_AID, 13, 1))

    # 国保組合 (6 digits, codes 300-399).
    for code, pref, pop, _ in PREFECTURES:
        kinds = _NHI_UNIONS[: 2 + (pop > 300) * 2 + (pop > 700) * 4]
        for j, kind in enumerate(kinds):
            cat.add(
                Insurer(
                    with_check_digit(f"{code:02d}{301 + j:03d}"), f"{pref}{kind}国民健康保険組合", NHI_UNION, code, 2
                )
            )
    for j, kind in enumerate(_NATIONAL_NHI_UNIONS):
        cat.add(Insurer(with_check_digit(f"13{350 + j:03d}"), f"{kind}国民健康保険組合", NHI_UNION, 13, 2))

    # Municipalities: each has a 市町村国保 number and a 後期高齢者医療 number.
    for code, pref, pop, post in PREFECTURES:
        count = max(6, round(municipalities * pop / total_pop * 0.6 + municipalities * 0.4 / 47))
        names: set[str] = set()
        for k in range(count):
            while True:
                kind = "市" if k < count // 2 else rng.choice("町町町村")
                name = _place(rng) + kind
                if name not in names:
                    names.add(name)
                    break
            muni_code = f"{101 + k:03d}" if k < 198 else None
            if muni_code is None:
                break
            towns = tuple(_place(rng) + rng.choice(_TOWN_TAIL) for _ in range(8))
            muni = Municipality(
                code,
                muni_code,
                name,
                f"{post}{rng.randrange(10)}",
                towns,
                nhi=cat.add(Insurer(with_check_digit(f"{code:02d}{muni_code}"), name, NHI, code, rng.randrange(4))),
                late_elderly=cat.add(
                    Insurer(
                        with_check_digit(f"39{code:02d}{muni_code}"),
                        f"{pref}後期高齢者医療広域連合",
                        LATE_ELDERLY,
                        code,
                        0,
                    )
                ),
            )
            cat.municipalities.append(muni)
    numbers = [i.number for i in cat.insurers]
    assert len(set(numbers)) == len(numbers), "insurer numbers must be unique"
    return cat


def prefecture_name(code: int) -> str:
    return PREFECTURES[code - 1][1]
