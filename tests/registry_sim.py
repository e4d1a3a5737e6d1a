"""A simulated registration stream with known ground truth, for the registry
match (tests/test_registry_sim.py, small; bench/registry.py, ~20,000 residents).

A registry of residents (names with old forms, characters outside JIS X 0208,
IVS sequences, small kana; addresses written as the registry writes them, in
towns with ヶ/ケ/が and の in their names) and the updates insurers send about
them. Every resident belongs to one kind, and every update about them carries
the basic information as that kind writes it:

* plain: exactly as registered;
* benign kinds: the same facts written as insurers' systems write them
  (width, spaces, hiragana, half-width kana, postcode formats, IVS dropped, old
  kanji forms, JIS X 0208 substitutes, address notation, ヶ/ケ/が, small kana
  written large): must be accepted;
* error kinds: a kana typo, day and month swapped, the wrong sex, a stale
  address (the person moved; the registry knows, the insurer does not): must
  be quarantined;
* wrong persons (紐づけ誤り): an update for resident A carrying the basic
  information of B, a same-town namesake (same name, another birth date and
  block) or a twin (same surname, birth date and address, another given
  name), written with a benign variant on top: must be quarantined and never
  visible to a check.

The written forms are spelled out here, not derived from the normalisers under
test. `evaluate` scores the acks and what an engine check shows afterwards.
"""

from __future__ import annotations

import collections
import random
from dataclasses import dataclass, field

from onshi.core import dates, enrollment, identifiers
from onshi.v1 import eligibility_pb2
from onshi.v1 import enrollment_pb2 as pb
from onshi.v1 import qualification_pb2 as qpb
from tests import ingest_support as s

PLAIN = "plain"
BENIGN = (
    "width",
    "spaces",
    "hiragana",
    "half_width_kana",
    "postcode_format",
    "ivs_dropped",
    "old_kanji_form",
    "non_jis_substitute",
    "address_notation",
    "ke_ga",
    "small_kana_large",
)
ERRORS = ("kana_typo", "swapped_day_month", "wrong_sex", "stale_address")
WRONG = ("namesake_same_town", "twin")
KINDS = (PLAIN, *BENIGN, *ERRORS, *WRONG)
# Share of residents per kind (wrong persons: pairs of residents per share).
SHARES = {PLAIN: 0.25, **{k: 0.05 for k in BENIGN}, **{k: 0.03 for k in ERRORS}, **{k: 0.02 for k in WRONG}}

AS_OF = "2024-12-01"  # after every acquisition, before every loss

SURNAMES = [
    (k, v)
    for k, v in (
        pair.split(":")
        for pair in [
            "佐藤:サトウ",
            "鈴木:スズキ",
            "高橋:タカハシ",
            "田中:タナカ",
            "伊藤:イトウ",
            "渡辺:ワタナベ",
            "山本:ヤマモト",
            "中村:ナカムラ",
            "小林:コバヤシ",
            "加藤:カトウ",
            "吉田:ヨシダ",
            "山田:ヤマダ",
            "佐々木:ササキ",
            "山口:ヤマグチ",
            "松本:マツモト",
            "井上:イノウエ",
            "木村:キムラ",
            "林:ハヤシ",
            "斎藤:サイトウ",
            "清水:シミズ",
            "山崎:ヤマザキ",
            "森:モリ",
            "池田:イケダ",
            "橋本:ハシモト",
            "阿部:アベ",
            "石川:イシカワ",
            "中島:ナカジマ",
            "前田:マエダ",
            "藤田:フジタ",
            "後藤:ゴトウ",
            "小川:オガワ",
            "岡田:オカダ",
            "長谷川:ハセガワ",
            "村上:ムラカミ",
            "近藤:コンドウ",
            "石井:イシイ",
            "坂本:サカモト",
            "遠藤:エンドウ",
            "青木:アオキ",
            "藤井:フジイ",
            "西村:ニシムラ",
            "福田:フクダ",
            "太田:オオタ",
            "三浦:ミウラ",
            "藤原:フジワラ",
            "岡本:オカモト",
            "松田:マツダ",
            "中川:ナカガワ",
            "中野:ナカノ",
            "原田:ハラダ",
            "小野:オノ",
            "田村:タムラ",
            "竹内:タケウチ",
            "金子:カネコ",
            "和田:ワダ",
            "中山:ナカヤマ",
            "石田:イシダ",
            "上田:ウエダ",
            "森田:モリタ",
            "柴田:シバタ",
            "酒井:サカイ",
            "工藤:クドウ",
            "横山:ヨコヤマ",
            "宮本:ミヤモト",
            "内田:ウチダ",
            "高木:タカギ",
            "安藤:アンドウ",
            "谷口:タニグチ",
            "大野:オオノ",
            "丸山:マルヤマ",
            "今井:イマイ",
            "河野:コウノ",
            "藤本:フジモト",
            "村田:ムラタ",
            "武田:タケダ",
            "上野:ウエノ",
            "杉山:スギヤマ",
            "増田:マスダ",
            "平野:ヒラノ",
            "大塚:オオツカ",
            "千葉:チバ",
            "久保:クボ",
            "松井:マツイ",
            "小島:コジマ",
            "岩崎:イワサキ",
            "桜井:サクライ",
            "野口:ノグチ",
            "松尾:マツオ",
            "菊地:キクチ",
        ]
    )
]
MALE = [
    tuple(p.split(":"))
    for p in [
        "太郎:タロウ",
        "一郎:イチロウ",
        "浩:ヒロシ",
        "誠:マコト",
        "隆:タカシ",
        "健一:ケンイチ",
        "修:オサム",
        "茂:シゲル",
        "清:キヨシ",
        "翔太:ショウタ",
        "大輔:ダイスケ",
        "拓也:タクヤ",
        "直樹:ナオキ",
        "蓮:レン",
        "陽翔:ハルト",
        "湊:ミナト",
        "悠真:ユウマ",
        "大翔:ヒロト",
        "涼:リョウ",
        "翼:ツバサ",
        "勇:イサム",
        "俊介:シュンスケ",
        "健太:ケンタ",
        "雄一:ユウイチ",
        "正:タダシ",
        "明:アキラ",
        "徹:トオル",
        "潤:ジュン",
        "航:ワタル",
        "恭平:キョウヘイ",
        "駿:シュン",
        "雅之:マサユキ",
        "和也:カズヤ",
        "哲也:テツヤ",
        "秀樹:ヒデキ",
        "洋平:ヨウヘイ",
        "進:ススム",
        "実:ミノル",
        "康弘:ヤスヒロ",
        "智也:トモヤ",
    ]
]
FEMALE = [
    tuple(p.split(":"))
    for p in [
        "花子:ハナコ",
        "陽子:ヨウコ",
        "恵子:ケイコ",
        "幸子:サチコ",
        "和子:カズコ",
        "洋子:ヨウコ",
        "裕子:ユウコ",
        "直美:ナオミ",
        "久美子:クミコ",
        "美穂:ミホ",
        "愛:アイ",
        "彩:アヤ",
        "結衣:ユイ",
        "陽菜:ヒナ",
        "凛:リン",
        "葵:アオイ",
        "美咲:ミサキ",
        "京子:キョウコ",
        "祥子:ショウコ",
        "千尋:チヒロ",
        "舞:マイ",
        "瞳:ヒトミ",
        "恭子:キョウコ",
        "由美:ユミ",
        "智子:トモコ",
        "純子:ジュンコ",
        "紬:ツムギ",
        "芽依:メイ",
        "さくら:サクラ",
        "真由美:マユミ",
        "友美:トモミ",
        "明美:アケミ",
        "理恵:リエ",
        "麻衣:マイ",
        "美和:ミワ",
        "奈々:ナナ",
        "千秋:チアキ",
        "香織:カオリ",
        "沙織:サオリ",
        "桃子:モモコ",
    ]
]
# Registered old forms (inside JIS X 0208) and what insurers' systems write.
OLD_FORM_SURNAMES = [
    ("渡邊", "ワタナベ", "渡辺"),
    ("澤田", "サワダ", "沢田"),
    ("齋藤", "サイトウ", "斎藤"),
    ("濱田", "ハマダ", "浜田"),
    ("廣瀬", "ヒロセ", "広瀬"),
    ("櫻井", "サクライ", "桜井"),
    ("國分", "コクブン", "国分"),
    ("眞鍋", "マナベ", "真鍋"),
    ("邊見", "ヘンミ", "辺見"),
    ("瀧本", "タキモト", "滝本"),
    ("齊藤", "サイトウ", "斉藤"),
    ("大澤", "オオサワ", "大沢"),
    ("藤澤", "フジサワ", "藤沢"),
    ("長濱", "ナガハマ", "長浜"),
    ("豐田", "トヨダ", "豊田"),
    ("圓谷", "ツブラヤ", "円谷"),
]
OLD_FORM_GIVEN = [
    ("實", "ミノル", "実"),
    ("惠子", "ケイコ", "恵子"),
    ("榮一", "エイイチ", "栄一"),
    ("眞理子", "マリコ", "真理子"),
    ("廣", "ヒロシ", "広"),
    ("龍也", "タツヤ", "竜也"),
]
# Registered characters outside JIS X 0208 and their usual substitutes.
NON_JIS_SURNAMES = [
    ("髙橋", "タカハシ", "高橋"),
    ("山﨑", "ヤマザキ", "山崎"),
    ("𠮷田", "ヨシダ", "吉田"),
    ("濵田", "ハマダ", "浜田"),
    ("德永", "トクナガ", "徳永"),
    ("髙木", "タカギ", "高木"),
    ("𠮷川", "ヨシカワ", "吉川"),
    ("宮﨑", "ミヤザキ", "宮崎"),
    ("黑田", "クロダ", "黒田"),
    ("瀨川", "セガワ", "瀬川"),
    ("岩﨑", "イワサキ", "岩崎"),
    ("髙田", "タカダ", "高田"),
    ("尾﨑", "オザキ", "尾崎"),
    ("德田", "トクダ", "徳田"),
]
NON_JIS_GIVEN = [("德郎", "トクロウ", "徳郎"), ("𠮷雄", "ヨシオ", "吉雄"), ("髙志", "タカシ", "高志")]
IVS_SURNAMES = [
    ("葛\U000e0100西", "カサイ"),
    ("辻\U000e0100本", "ツジモト"),
    ("辻\U000e0100", "ツジ"),
    ("葛\U000e0100城", "カツラギ"),
]
# Foreign-origin names: their kana carry small kana a legacy system writes large.
FOREIGN = [
    ("シルヴァ", "シルヴァ"),
    ("ヴィエイラ", "ヴィエイラ"),
    ("フェルナンデス", "フェルナンデス"),
    ("チェン", "チェン"),
]
FOREIGN_GIVEN = [("ジョアン", "ジョアン"), ("マリア", "マリア"), ("ジュリア", "ジュリア"), ("ショーン", "ショーン")]
SMALL_LARGE = str.maketrans("ァィゥェォッャュョヮヵヶ", "アイウエオツヤユヨワカケ")

# (prefecture, city, town, postcode head, 丁目 style). Towns with ヶ/ケ/が/の carry a ke_ga variant.
TOWNS = [
    ("神奈川県", "茅ヶ崎市", "東海岸北", "253", True),
    ("神奈川県", "茅ヶ崎市", "本村", "253", True),
    ("千葉県", "鎌ケ谷市", "道野辺中央", "273", True),
    ("東京都", "千代田区", "霞が関", "100", True),
    ("東京都", "千代田区", "丸の内", "100", True),
    ("岐阜県", "不破郡関ケ原町", "関ケ原", "503", False),
    ("茨城県", "龍ケ崎市", "馴馬町", "301", False),
    ("東京都", "千代田区", "一番町", "102", False),
    ("東京都", "中央区", "八丁堀", "104", True),
    ("北海道", "札幌市中央区", "北一条西", "060", True),
    ("大阪府", "大阪市北区", "梅田", "530", True),
    ("愛知県", "名古屋市中区", "栄", "460", True),
    ("福岡県", "福岡市博多区", "博多駅前", "812", True),
    ("宮城県", "仙台市青葉区", "一番町", "980", True),
    ("東京都", "新宿区", "西新宿", "160", True),
    ("東京都", "世田谷区", "三軒茶屋", "154", True),
    ("埼玉県", "さいたま市浦和区", "高砂", "330", True),
    ("東京都", "港区", "六本木", "106", True),
    ("東京都", "台東区", "浅草", "111", True),
    ("神奈川県", "横浜市中区", "山下町", "231", False),
    ("兵庫県", "神戸市中央区", "三宮町", "650", True),
    ("広島県", "広島市中区", "八丁堀", "730", False),
    ("東京都", "千代田区", "九段南", "102", True),
    ("東京都", "品川区", "大井", "140", True),
    ("東京都", "江東区", "豊洲", "135", True),
    ("長野県", "北佐久郡軽井沢町", "大字軽井沢", "389", False),
]
KE_GA = {
    "茅ヶ崎": ("茅ケ崎",),
    "鎌ケ谷": ("鎌ヶ谷",),
    "霞が関": ("霞ヶ関", "霞ケ関"),
    "丸の内": ("丸ノ内",),
    "関ケ原": ("関ヶ原",),
    "龍ケ崎": ("龍ヶ崎",),
}
KANJI_DIGITS = "〇一二三四五六七八九"
BUILDINGS = ("ハイツ", "コーポ", "マンション", "レジデンス", "荘")
WIDE = str.maketrans("0123456789-", "０１２３４５６７８９－")
HALF_KANA = dict(
    zip(
        "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲン"
        "ァィゥェォッャュョー",
        "ｱｲｳｴｵｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄﾅﾆﾇﾈﾉﾊﾋﾌﾍﾎﾏﾐﾑﾒﾓﾔﾕﾖﾗﾘﾙﾚﾛﾜｦﾝｧｨｩｪｫｯｬｭｮｰ",
        strict=True,
    )
)
VOICED = dict(
    zip("ガギグゲゴザジズゼゾダヂヅデドバビブベボヴ", "カキクケコサシスセソタチツテトハヒフヘホウ", strict=True)
)
SEMI = dict(zip("パピプペポ", "ハヒフヘホ", strict=True))
TYPO_KANA = "アカサタナハマヤラワイキシチニヒミリ"


def kanji_numeral(n: int) -> str:
    if n < 10:
        return KANJI_DIGITS[n]
    tens, units = divmod(n, 10)
    return ("" if tens == 1 else KANJI_DIGITS[tens]) + "十" + (KANJI_DIGITS[units] if units else "")


def half_width(kana: str) -> str:
    out = []
    for c in kana:
        if c in VOICED:
            out.append(HALF_KANA[VOICED[c]] + "ﾞ")
        elif c in SEMI:
            out.append(HALF_KANA[SEMI[c]] + "ﾟ")
        else:
            out.append(HALF_KANA.get(c, " " if c in " \u3000" else c))
    return "".join(out)


def hiragana(kana: str) -> str:
    return "".join(chr(ord(c) - 0x60) if "ァ" <= c <= "ヶ" and c != "ヴ" else c for c in kana)


@dataclass
class Address:
    town: tuple
    chome: int
    ban: int
    go: int
    room: str = ""  # building + room, or ""

    def registered(self) -> str:
        pref, city, town, _, chome_style = self.town
        head = f"{pref}{city}{town}"
        if chome_style:
            text = f"{head}{kanji_numeral(self.chome)}丁目{self.ban}番{self.go}号"
        else:
            text = f"{head}{self.ban * 10 + self.chome}番地{self.go}"
        return text + (f"\u3000{self.room}" if self.room else "")

    def notation(self, rng: random.Random) -> str:
        """The same address in another block notation."""
        pref, city, town, _, chome_style = self.town
        head = f"{pref}{city}{town}"
        if chome_style:
            block = rng.choice(
                (
                    f"{self.chome}-{self.ban}-{self.go}",
                    f"{self.chome}丁目{self.ban}-{self.go}",
                    f"{self.chome}丁目{self.ban}番{self.go}号",
                    f"{kanji_numeral(self.chome)}丁目{kanji_numeral(self.ban)}番{kanji_numeral(self.go)}号",
                    f"{self.chome}－{self.ban}－{self.go}",
                )
            )
        else:
            block = rng.choice(
                (
                    f"{self.ban * 10 + self.chome}-{self.go}",
                    f"{self.ban * 10 + self.chome}の{self.go}",
                    f"{self.ban * 10 + self.chome}番地の{self.go}",
                    f"{self.ban * 10 + self.chome}番{self.go}号",
                )
            )
        return head + block + (rng.choice((" ", "　", "")) + self.room if self.room else "")

    def postcode(self) -> str:
        return f"{self.town[3]}-{(self.ban * 37 + self.chome) % 10_000:04d}"


@dataclass
class Resident:
    index: int
    kind: str
    surname: tuple  # (registered, kana, written-by-insurers or "")
    given: tuple
    sex: int
    birth: str
    address: Address
    insurer: str = ""
    record: pb.Resident = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.record = pb.Resident(
            resident_id=s.resident_id(self.index),
            name=f"{self.surname[0]}\u3000{self.given[0]}",
            name_kana=f"{self.surname[1]}\u3000{self.given[1]}",
            birth_date=s.date(self.birth),
            sex=self.sex,
            address=self.address.registered(),
            postcode=self.address.postcode(),
        )


@dataclass
class Update:
    message: pb.EnrollmentUpdate
    kind: str
    birth_day: int  # as sent (what a check by number presents)
    number: str = ""  # acquisitions: the insured number, for the engine check


@dataclass
class Simulation:
    residents: list[Resident]
    updates: list[Update]

    def registry(self) -> list[pb.Resident]:
        return [r.record for r in self.residents]


def written(r: Resident, kind: str, rng: random.Random) -> qpb.Person:
    """Resident r's basic information as an insurer of this kind writes it."""
    rec = r.record
    p = qpb.Person(
        name=rec.name,
        name_kana=rec.name_kana,
        sex=rec.sex,
        birth_date=rec.birth_date,
        address=rec.address,
        postcode=rec.postcode,
    )
    if kind == "width":
        p.address = rec.address.translate(WIDE)
        p.name = rec.name.replace("\u3000", " ")
    elif kind == "spaces":
        p.name = rng.choice((rec.name.replace("\u3000", ""), rec.name.replace("\u3000", "  "), " " + rec.name))
        p.name_kana = rec.name_kana.replace("\u3000", rng.choice(("", " ", "\u3000\u3000")))
        p.address = rec.address.replace("\u3000", " ")
    elif kind == "hiragana":
        p.name_kana = hiragana(rec.name_kana)
    elif kind == "half_width_kana":
        p.name_kana = half_width(rec.name_kana)
    elif kind == "postcode_format":
        digits = rec.postcode.replace("-", "")
        p.postcode = rng.choice((f"〒{rec.postcode}", digits, rec.postcode.translate(WIDE)))
        if rng.random() < 0.5:
            p.address = f"〒{rng.choice((rec.postcode, digits))} {rec.address}"
    elif kind == "ivs_dropped":
        p.name = "".join(c for c in rec.name if not 0xE0100 <= ord(c) <= 0xE01EF)
    elif kind in ("old_kanji_form", "non_jis_substitute"):
        p.name = f"{r.surname[2] or r.surname[0]}\u3000{r.given[2] if len(r.given) > 2 else r.given[0]}"
    elif kind == "address_notation":
        p.address = r.address.notation(rng)
    elif kind == "ke_ga":
        for registered, forms in KE_GA.items():
            p.address = p.address.replace(registered, rng.choice(forms))
    elif kind == "small_kana_large":
        p.name_kana = rec.name_kana.translate(SMALL_LARGE)
    elif kind == "kana_typo":
        kana = list(rec.name_kana)
        spots = [i for i, c in enumerate(kana) if c not in " \u3000ー"]
        i = rng.choice(spots)
        base = kana[i].translate(SMALL_LARGE)
        kana[i] = rng.choice([t for t in TYPO_KANA if t != base and t != VOICED.get(base, base)])
        p.name_kana = "".join(kana)
    elif kind == "swapped_day_month":
        p.birth_date.month, p.birth_date.day = rec.birth_date.day, rec.birth_date.month
    elif kind == "wrong_sex":
        p.sex = qpb.SEX_FEMALE if rec.sex == qpb.SEX_MALE else qpb.SEX_MALE
    return p


def generate(residents: int, seed: int = 14) -> Simulation:
    """About `residents` registry records and ~1.25 updates per resident."""
    rng = random.Random(seed)
    people: list[Resident] = []
    used_addresses: set[str] = set()

    def address(town=None, chome=None) -> Address:
        """A new address (never one already given out), in `town` if given."""
        while True:
            a = Address(
                town or rng.choice(TOWNS),
                chome or rng.randint(1, 9),
                rng.randint(1, 40),
                rng.randint(1, 30),
                f"{rng.choice(BUILDINGS)}{rng.randint(1, 9)}0{rng.randint(1, 9)}号室" if rng.random() < 0.3 else "",
            )
            if a.registered() not in used_addresses:
                used_addresses.add(a.registered())
                return a

    def birth(kind: str) -> str:
        year, month = rng.randint(1935, 2010), rng.randint(1, 12)
        day = rng.randint(1, 12 if kind == "swapped_day_month" else 28)
        while kind == "swapped_day_month" and day == month:
            day = rng.randint(1, 12)
        return f"{year}-{month:02d}-{day:02d}"

    def person(kind: str) -> Resident:
        sex = rng.choice((qpb.SEX_MALE, qpb.SEX_FEMALE))
        surname = (*rng.choice(SURNAMES), "")
        given = rng.choice(MALE if sex == qpb.SEX_MALE else FEMALE)
        town = None
        if kind == "old_kanji_form":
            surname = rng.choice(OLD_FORM_SURNAMES)
            if rng.random() < 0.3:
                given = rng.choice(OLD_FORM_GIVEN)
        elif kind == "non_jis_substitute":
            surname = rng.choice(NON_JIS_SURNAMES)
            if rng.random() < 0.2:
                given = rng.choice(NON_JIS_GIVEN)
        elif kind == "ivs_dropped":
            surname = (*rng.choice(IVS_SURNAMES), "")
        elif kind == "small_kana_large":
            if rng.random() < 0.3:
                surname, given = (*rng.choice(FOREIGN), ""), rng.choice(FOREIGN_GIVEN)
            else:
                given = rng.choice([g for g in MALE + FEMALE if set(g[1]) & set("ァィゥェォッャュョ")])
        elif kind == "ke_ga":
            town = rng.choice([t for t in TOWNS if any(k in t[1] + t[2] for k in KE_GA)])
        r = Resident(len(people), kind, surname, given, sex, birth(kind), address(town))
        people.append(r)
        return r

    total = residents
    wrong_pairs: list[tuple[str, Resident, Resident]] = []
    for kind in KINDS:
        count = round(total * SHARES[kind]) if kind != PLAIN else 0
        for _ in range(count if kind not in WRONG else count // 2):
            if kind == "namesake_same_town":
                a = person(PLAIN)
                b = Resident(
                    len(people),
                    PLAIN,
                    a.surname,
                    a.given,
                    a.sex,
                    birth(PLAIN),
                    address(a.address.town, a.address.chome),
                )
                people.append(b)
                wrong_pairs.append((kind, a, b))
            elif kind == "twin":
                a = person(PLAIN)
                given = rng.choice(
                    [
                        g
                        for g in (MALE if a.sex == qpb.SEX_MALE else FEMALE)
                        if g[0] != a.given[0] and g[1] != a.given[1]
                    ]
                )
                b = Resident(len(people), PLAIN, a.surname, given, a.sex, a.birth, a.address)
                people.append(b)
                wrong_pairs.append((kind, a, b))
            else:
                person(kind)
    while len(people) < total:
        person(PLAIN)

    updates: list[Update] = []
    numbers = iter(range(1, 10**9))

    def add(r: Resident, kind: str, p: qpb.Person, resident_id: str | None = None, insurer: str = "") -> None:
        insurer = insurer or rng.choice(s.INSURERS)
        r.insurer = r.insurer or insurer
        number = f"{next(numbers):08d}"
        acquired = f"2024-{rng.randint(4, 10):02d}-01"
        ratio = rng.choice((10, 20, 30))
        u = s.acquisition(f"u{len(updates)}", insurer, r.record, number, acquired, ratio=ratio)
        u.person.CopyFrom(p)
        if resident_id:
            u.resident_id = resident_id
        day = dates.proto_day(p.birth_date) if _real_date(p.birth_date) else 0
        updates.append(Update(u, kind, day, number))
        follow = rng.random()
        if follow < 0.15:
            c = s.ratio_change(f"u{len(updates)}", insurer, r.record, number, 30 if ratio != 30 else 20)
        elif follow < 0.25:
            c = s.loss(f"u{len(updates)}", insurer, r.record, number, "2025-04-01")
        else:
            return
        c.person.CopyFrom(p)
        c.resident_id = u.resident_id
        updates.append(Update(c, kind, day))

    for r in people:
        if r.kind == "stale_address":
            # The registry has the new address; the insurer still the old one.
            old = address(r.address.town if rng.random() < 0.5 else None)
            p = written(r, PLAIN, rng)
            p.address = old.registered() if rng.random() < 0.5 else old.notation(rng)
            add(r, r.kind, p)
        else:
            add(r, r.kind, written(r, r.kind, rng))
    for kind, a, b in wrong_pairs:
        # The insurer's member is b; it looked up a by mistake. Written with a benign variant on top.
        # Another insurer than a's own, so a's own updates are not held behind this one.
        variant = rng.choice(("spaces", "hiragana", "half_width_kana", "address_notation", "width"))
        add(
            b,
            kind,
            written(b, variant, rng),
            resident_id=a.record.resident_id,
            insurer=rng.choice([i for i in s.INSURERS if i != a.insurer]),
        )
    rng.shuffle(updates)
    # An insurer's updates of one number keep their order: acquisition before its follow-up.
    order = {id(u): i for i, u in enumerate(updates)}
    by_number: dict[str, list[Update]] = collections.defaultdict(list)
    for u in updates:
        by_number[_number_of(u.message)].append(u)
    for group in by_number.values():
        slots = sorted(order[id(u)] for u in group)
        group.sort(key=lambda u: u.message.WhichOneof("change") != "acquisition")
        for slot, u in zip(slots, group, strict=True):
            updates[slot] = u
    return Simulation(people, updates)


def _real_date(d) -> bool:
    try:
        dates.proto_day(d)
    except ValueError:
        return False
    return True


def _number_of(u: pb.EnrollmentUpdate) -> str:
    kind = u.WhichOneof("change")
    return u.acquisition.qualification.number if kind == "acquisition" else getattr(u, kind).insured_number.number


@dataclass
class KindResult:
    sent: int = 0
    accepted: int = 0
    quarantined: int = 0
    rejected: int = 0
    loose: int = 0  # accepted with a loose rule named in the ack
    registrations_accepted: int = 0  # accepted acquisitions and basic information changes (registry-checked)
    acquisitions_accepted: int = 0
    visible: int = 0  # acquisitions a check by number shows VALID

    @property
    def quarantined_share(self) -> float:
        return self.quarantined / self.sent if self.sent else 0.0


def evaluate(sim: Simulation, acks: dict[str, pb.EnrollmentAck], engine) -> dict[str, KindResult]:
    """Per kind: outcomes of its updates, and how many of its acquisitions a
    check by number (insured number + birth date as sent) shows VALID."""
    results = {kind: KindResult() for kind in KINDS}
    as_of = dates.proto_day(s.date(AS_OF))
    checks = []
    for u in sim.updates:
        r = results[u.kind]
        ack = acks[u.message.update_id]
        r.sent += 1
        if ack.outcome == pb.ENROLLMENT_OUTCOME_ACCEPTED:
            r.accepted += 1
            r.loose += bool(ack.loose_matches)
            r.acquisitions_accepted += bool(u.number)
            r.registrations_accepted += u.message.WhichOneof("change") in enrollment.REGISTERING
        elif ack.outcome == pb.ENROLLMENT_OUTCOME_QUARANTINED:
            r.quarantined += 1
        elif ack.outcome == pb.ENROLLMENT_OUTCOME_REJECTED:
            r.rejected += 1
        if u.number:
            checks.append((u, identifiers.number_key(u.message.insurer_number, "K1", u.number, "00")))
    answers = engine.check_by_number_batch([(key, u.birth_day) for u, key in checks], as_of)
    for (u, _), raw in zip(checks, answers, strict=True):
        if eligibility_pb2.CheckResponse.FromString(raw).validity == eligibility_pb2.VALIDITY_VALID:
            results[u.kind].visible += 1
    return results


def goals(results: dict[str, KindResult]) -> list[str]:
    """The goals that do not hold (empty: all hold)."""
    failed = []
    for kind, r in results.items():
        if r.accepted + r.quarantined + r.rejected != r.sent:
            failed.append(f"{kind}: {r.sent} sent, {r.accepted + r.quarantined + r.rejected} accounted for")
        if kind in ERRORS + WRONG and r.quarantined != r.sent:
            failed.append(f"{kind}: {r.quarantined} of {r.sent} quarantined")
        if kind in WRONG and r.visible:
            failed.append(f"{kind}: {r.visible} wrong persons visible to a check")
        if kind not in WRONG and r.visible != r.acquisitions_accepted:  # the check itself works
            failed.append(f"{kind}: {r.acquisitions_accepted} acquisitions accepted, {r.visible} visible")
        if kind in (PLAIN, *BENIGN) and r.quarantined_share > 0.005:
            failed.append(f"{kind}: {r.quarantined} of {r.sent} correct registrations quarantined")
    return failed


def table(results: dict[str, KindResult]) -> str:
    lines = [
        "| kind | class | updates | accepted | of which loose | quarantined | rejected | "
        "quarantined share | wrong persons visible |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, r in results.items():
        cls = "error" if kind in ERRORS else "wrong person" if kind in WRONG else "correct"
        visible = str(r.visible) if kind in WRONG else ""
        lines.append(
            f"| {kind} | {cls} | {r.sent:,} | {r.accepted:,} | {r.loose:,} | {r.quarantined:,} | "
            f"{r.rejected:,} | {100 * r.quarantined_share:.2f} % | {visible} |"
        )
    return "\n".join(lines)


def run_in_process(sim: Simulation, store, chunk: int = 256) -> dict[str, pb.EnrollmentAck]:
    """The writer's own path (check_update, then apply_update in group-committed
    transactions) on a real store at `store`; closed when done."""
    from onshi.core import enrollment, registry
    from onshi.core.writer import Writer
    from onshi.server.writer_server import GroupWriter

    writer = Writer(store, map_size=1 << 26)
    enrollment.open_dbs(writer)
    group = GroupWriter(writer)
    acks: dict[str, pb.EnrollmentAck] = {}
    try:
        group.apply(lambda t: [registry.put(t, r) for r in sim.registry()])
        insurers = frozenset(s.INSURERS)
        for i in range(0, len(sim.updates), chunk):
            checked = []
            for u in sim.updates[i : i + chunk]:
                try:
                    checked.append(enrollment.check_update(u.message, insurers))
                except enrollment.Invalid as exc:
                    acks[u.message.update_id] = enrollment.rejected_ack(u.message.update_id, exc.violations)
            for ack in group.apply(lambda t, checked=checked: [enrollment.apply_update(t, c, 0.0) for c in checked]):
                acks[ack.update_id] = ack
    finally:
        group.close()
        writer.close()
    return acks
