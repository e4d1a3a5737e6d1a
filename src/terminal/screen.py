"""What the reception desk sees: the result of a check in Japanese with English
beside it, what to do next when it is not a plain "valid", and the exit code and
JSON a receipt/HIS system reads (docs/TERMINAL.md lists them).

Every outcome of `onshi terminal check` — the five 資格有効性 answers and every
way a check can fail (card, PIN, certificate, network, input) — is one
`Outcome` with its own exit code, and every non-valid outcome carries next steps
taken from DOMAIN.md §5 (portal screen or paper card, else the self-declaration
form and the declared burden ratio; the failure-mode procedure when the central
service cannot be reached). Names are printed exactly as registered: no "●".
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, field

from google.protobuf import json_format

from ..v1 import eligibility_pb2, qualification_pb2


class Outcome(enum.Enum):
    # name = (json key, exit code, 日本語, English)
    VALID = ("valid", 0, "資格有効", "Valid")
    # 資格有効性 answers: 10 + the validity code, as `onshi check` exits.
    INVALID = ("invalid", 12, "資格無効", "Invalid (qualification lost)")
    INVALID_NEWER_EXISTS = (
        "invalid_newer_exists",
        13,
        "資格無効（新しい資格あり）",
        "Invalid (a newer qualification exists)",
    )
    NO_RECORD = ("no_record", 14, "該当資格なし", "No record")
    MULTIPLE = ("multiple", 15, "複数該当", "Multiple qualifications")
    NO_CARD = ("no_card", 20, "カードが読み取れません", "No card in the reader")
    CARD_REMOVED = ("card_removed", 21, "カードが取り外されました", "Card removed while reading")
    NOT_MY_NUMBER_CARD = (
        "not_my_number_card",
        22,
        "マイナンバーカードではありません",
        "Not a My Number card",
    )
    PIN_INCORRECT = ("pin_incorrect", 23, "暗証番号が違います", "PIN incorrect")
    PIN_BLOCKED = ("pin_blocked", 24, "暗証番号がロックされています", "PIN blocked")
    CERT_EXPIRED = (
        "card_certificate_expired",
        25,
        "電子証明書の有効期限切れ",
        "Card certificate expired",
    )
    CERT_REVOKED = (
        "card_certificate_revoked",
        26,
        "電子証明書が失効しています",
        "Card certificate revoked",
    )
    CARD_REFUSED = ("card_refused", 27, "カードを確認できません", "Card could not be verified")
    READER_UNAVAILABLE = (
        "reader_unavailable",
        28,
        "カードリーダーが使用できません",
        "Card reader unavailable",
    )
    SERVER_UNREACHABLE = (
        "server_unreachable",
        30,
        "資格確認システムに接続できません",
        "Eligibility service unreachable",
    )
    SERVER_REFUSED = (
        "server_refused",
        31,
        "この端末は接続を拒否されました",
        "This terminal was refused",
    )
    INPUT_REJECTED = ("input_rejected", 32, "入力内容に誤りがあります", "Input rejected")
    REQUEST_INVALID = (
        "request_invalid",
        33,
        "依頼ファイルを読めません",
        "Request file not readable",
    )
    ERROR = ("error", 1, "予期しないエラー", "Unexpected error")

    @property
    def key(self) -> str:
        return self.value[0]

    @property
    def exit_code(self) -> int:
        return self.value[1]

    @property
    def ja(self) -> str:
        return self.value[2]

    @property
    def en(self) -> str:
        return self.value[3]


BY_VALIDITY = {
    eligibility_pb2.VALIDITY_VALID: Outcome.VALID,
    eligibility_pb2.VALIDITY_INVALID: Outcome.INVALID,
    eligibility_pb2.VALIDITY_INVALID_NEWER_EXISTS: Outcome.INVALID_NEWER_EXISTS,
    eligibility_pb2.VALIDITY_NO_RECORD: Outcome.NO_RECORD,
    eligibility_pb2.VALIDITY_MULTIPLE: Outcome.MULTIPLE,
}

EXPIRY_WARNING_DAYS = 92  # DOMAIN.md §3: warn when <= 3 months away


@dataclass
class Result:
    """One check as the terminal saw it; rendered by `render_text` / `to_json`."""

    outcome: Outcome
    method: str  # "card" | "number"
    response: eligibility_pb2.CheckResponse | None = None
    as_of: dt.date | None = None
    pin_tries_left: int | None = None
    card_serial: str | None = None  # hex, from the certificate read off the card
    card_not_after: dt.datetime | None = None
    detail: str = ""  # technical detail in English (status message...)
    field_errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code


# --- labels -----------------------------------------------------------------

SEX = {qualification_pb2.SEX_MALE: ("男", "male"), qualification_pb2.SEX_FEMALE: ("女", "female")}
RELATIONSHIP = {
    qualification_pb2.RELATIONSHIP_INSURED: ("本人", "insured person"),
    qualification_pb2.RELATIONSHIP_DEPENDENT: ("家族", "dependent"),
}
LOSS_REASON = {
    qualification_pb2.LOSS_REASON_DEATH: ("01 死亡", "01 death"),
    qualification_pb2.LOSS_REASON_PUBLIC_ASSISTANCE: (
        "02 生活保護開始",
        "02 public assistance started",
    ),
    qualification_pb2.LOSS_REASON_OTHER_INSURANCE: (
        "03 他の医療保険に加入",
        "03 joined another insurance",
    ),
    qualification_pb2.LOSS_REASON_OTHER: ("99 その他", "99 other"),
}
CARD_KIND = {
    qualification_pb2.CARD_KIND_EMPLOYEE: ("被保険者証（健康保険）", "employee insurance"),
    qualification_pb2.CARD_KIND_SEAMEN: ("船員保険", "seamen's insurance"),
    qualification_pb2.CARD_KIND_NATIONAL_HEALTH: ("国民健康保険", "national health insurance"),
    qualification_pb2.CARD_KIND_LATE_ELDERLY: ("後期高齢者医療", "late-elderly"),
    qualification_pb2.CARD_KIND_RETIREE: ("退職者医療", "retiree"),
    qualification_pb2.CARD_KIND_SHORT_TERM: ("短期被保険者証", "short-term card"),
    qualification_pb2.CARD_KIND_STUDENT_SPECIAL: ("修学中特例", "student special"),
    qualification_pb2.CARD_KIND_RESIDENCE_SPECIAL: ("住所地特例", "residence special"),
    qualification_pb2.CARD_KIND_DAY_LABOURER: ("日雇特例", "day labourer"),
    qualification_pb2.CARD_KIND_ELIGIBILITY_CERTIFICATE: (
        "資格証明書（窓口10割）",
        "eligibility certificate (patient pays 100 %)",
    ),
}
DISEASE = {
    qualification_pb2.SPECIFIC_DISEASE_DIALYSIS: ("人工透析を実施している慢性腎不全", "dialysis"),
    qualification_pb2.SPECIFIC_DISEASE_HEMOPHILIA: ("血友病", "haemophilia"),
    qualification_pb2.SPECIFIC_DISEASE_HIV: (
        "後天性免疫不全症候群（抗ウイルス剤投与）",
        "HIV (antiviral therapy)",
    ),
}
WARNING_TEXT = {
    eligibility_pb2.WARNING_CODE_CARD_CERTIFICATE_EXPIRING: (
        "カードの電子証明書の有効期限が近づいています。市区町村窓口での更新をご案内ください。",
        "The card certificate expires soon: ask the patient to renew it at the municipal office.",
    ),
    eligibility_pb2.WARNING_CODE_CARD_CERTIFICATE_EXPIRED: (
        "カードの電子証明書の有効期限が切れています。市区町村窓口での更新をご案内ください。",
        "The card certificate has expired: ask the patient to renew it at the municipal office.",
    ),
    eligibility_pb2.WARNING_CODE_CARD_CERTIFICATE_REVOKED: (
        "カードの電子証明書は失効しています。市区町村窓口での再発行をご案内ください。",
        "The card certificate is revoked: ask the patient to have it reissued at the municipal office.",
    ),
}

# Fallbacks of DOMAIN.md §5, reused by several outcomes.
STEP_PORTAL_OR_PAPER = (
    "マイナポータルの資格情報画面、または資格確認書・保険証の提示を求めてください。",
    "Ask for the My Number portal (マイナポータル) qualification screen, or the eligibility "
    "certificate (資格確認書) / insurance card.",
)
STEP_SELF_DECLARATION = (
    "提示できない場合は「被保険者資格申立書」に記入いただき、申し立てた負担割合で受け付けてください。",
    "If the patient has none: have them fill in the self-declaration form (被保険者資格申立書) "
    "and charge the burden ratio they declare.",
)
STEP_BY_NUMBER = (
    "保険証・資格確認書があれば番号で確認してください（onshi terminal check --number）。",
    "If the patient has an insurance card or eligibility certificate, check by its number "
    "(onshi terminal check --number).",
)


def _date(d) -> str:
    """google.type.Date or date -> ISO text ('' for an unset proto date)."""
    if d is None:
        return ""
    if isinstance(d, dt.date):
        return d.isoformat()
    if not (d.year or d.month or d.day):
        return ""
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def _period(msg) -> str:
    start, end = _date(msg.valid_from), _date(msg.valid_until)
    return f"{start} 〜 {end}" if (start or end) else ""


def _ratio(percent: int) -> tuple[str, str]:
    return (f"{percent // 10}割" if percent % 10 == 0 else f"{percent}%"), f"{percent} %"


def next_steps(result: Result) -> list[tuple[str, str]]:
    """What staff do now, (日本語, English) per step; empty for a clean VALID."""
    o = result.outcome
    by_card = result.method == "card"
    steps: list[tuple[str, str]] = []
    if o is Outcome.VALID:
        return steps
    if o is Outcome.INVALID:
        q = result.response.qualifications[-1] if result.response and result.response.qualifications else None
        reason = q.loss_reason if q is not None else None
        if q is not None and q.HasField("loss_date"):
            reason_ja, reason_en = LOSS_REASON.get(q.loss_reason, ("", ""))
            steps.append(
                (
                    f"{_date(q.loss_date)} に資格を喪失しています（{reason_ja}）。",
                    f"The qualification was lost on {_date(q.loss_date)} ({reason_en}).",
                )
            )
        if reason == qualification_pb2.LOSS_REASON_PUBLIC_ASSISTANCE:
            # Medical assistance replaces insurance: no new insurer will register.
            steps.append(
                (
                    "生活保護の医療券の提示を求めてください。",
                    "Ask for the public-assistance medical ticket (医療券).",
                )
            )
        elif reason == qualification_pb2.LOSS_REASON_DEATH:
            steps.append(
                (
                    "喪失事由は「死亡」です。本人確認を行ってください（別人のカード・番号の可能性）。",
                    "The loss reason is death: confirm the patient's identity (the card or number may "
                    "be someone else's).",
                )
            )
        else:
            steps.append(
                (
                    "新しい保険者の登録は加入から数日（法定5日以内）遅れることがあります。",
                    "A new insurer may take a few days (legally up to 5) to register the person.",
                )
            )
        steps += [STEP_PORTAL_OR_PAPER, STEP_SELF_DECLARATION]
    elif o is Outcome.INVALID_NEWER_EXISTS:
        steps.append(
            (
                "提示された番号は喪失済みですが、新しい資格があります。マイナンバーカードで確認する"
                "（onshi terminal check --card）か、新しい資格確認書・保険証の提示を求めてください。",
                "The number presented is lost but the person has a newer qualification: check with the "
                "My Number card (onshi terminal check --card) or ask for the new eligibility certificate "
                "or insurance card.",
            )
        )
        steps.append(STEP_SELF_DECLARATION)
    elif o is Outcome.NO_RECORD:
        if not by_card:
            steps.append(
                (
                    "入力した保険者番号・記号・番号・枝番と生年月日を確認してください。",
                    "Check the typed insurer number, symbol, number, branch and birth date.",
                )
            )
        else:
            steps.append(
                (
                    "このカードは保険資格に紐づいていません。マイナポータルでの登録（初回紐づけ）をご案内ください。",
                    "This card is not linked to a qualification: the patient can "
                    "link it through the My Number portal (初回紐づけ).",
                )
            )
        steps.append(
            (
                "加入直後は保険者の登録まで数日（法定5日以内）かかることがあります。",
                "A newly insured person may not be registered yet (insurers have up to 5 days).",
            )
        )
        steps += [STEP_PORTAL_OR_PAPER, STEP_SELF_DECLARATION]
    elif o is Outcome.MULTIPLE:
        steps.append(
            (
                "複数の資格が有効です（船員保険と後期高齢者医療など二重加入が認められる場合があります）。"
                "どの保険者に請求するか患者に確認してください。",
                "More than one qualification is valid (dual enrollment is legal in some cases, e.g. "
                "seamen's insurance + late-elderly). Confirm with the patient which insurer to bill.",
            )
        )
    elif o is Outcome.NO_CARD:
        steps.append(
            (
                "カードをカードリーダーに置き直して、もう一度確認してください。",
                "Place the card on the reader again and retry.",
            )
        )
        steps += [STEP_BY_NUMBER, STEP_PORTAL_OR_PAPER, STEP_SELF_DECLARATION]
    elif o is Outcome.CARD_REMOVED:
        steps.append(
            (
                "読み取り中にカードが外れました。カードを置いたまま、もう一度確認してください。",
                "The card left the reader while it was being read: place it again, keep it there, and retry.",
            )
        )
        steps += [STEP_BY_NUMBER, STEP_PORTAL_OR_PAPER]
    elif o is Outcome.NOT_MY_NUMBER_CARD:
        steps.append(("マイナンバーカードを置いてください。", "Place a My Number card on the reader."))
        steps += [STEP_BY_NUMBER, STEP_PORTAL_OR_PAPER]
    elif o is Outcome.PIN_INCORRECT:
        n = result.pin_tries_left
        steps.append(
            (
                f"残り{n}回です。{n}回続けて間違えるとロックされます。もう一度入力いただくか、"
                "顔認証付きカードリーダーでの確認に切り替えてください。",
                f"{n} tries left; {n} more wrong PINs lock it. Let the patient try again, or "
                "switch to face verification.",
            )
        )
        steps.append(STEP_BY_NUMBER)
    elif o is Outcome.PIN_BLOCKED:
        steps.append(
            (
                "暗証番号はロックされています。本人が市区町村窓口で再設定する必要があります。",
                "The PIN is locked: the patient must have it reset at the municipal office.",
            )
        )
        steps.append(
            (
                "顔認証付きカードリーダーがあれば顔認証で確認してください。",
                "If a face-verification reader is available, check with face verification.",
            )
        )
        steps += [STEP_BY_NUMBER, STEP_PORTAL_OR_PAPER, STEP_SELF_DECLARATION]
    elif o in (Outcome.CERT_EXPIRED, Outcome.CERT_REVOKED):
        if o is Outcome.CERT_EXPIRED:
            until = _date(result.card_not_after.date()) if result.card_not_after else ""
            steps.append(
                (
                    f"カードの電子証明書の有効期限が切れています{f'（{until}）' if until else ''}。"
                    "本人が市区町村窓口で更新する必要があります。",
                    f"The card's certificate has expired{f' ({until})' if until else ''}: "
                    "the patient must renew it at the municipal office.",
                )
            )
        else:
            steps.append(
                (
                    "カードの電子証明書は失効しています。本人が市区町村窓口で再発行を受ける必要があります。",
                    "The card's certificate is revoked: the patient must have it reissued at the municipal office.",
                )
            )
        steps += [STEP_BY_NUMBER, STEP_PORTAL_OR_PAPER, STEP_SELF_DECLARATION]
    elif o is Outcome.CARD_REFUSED:
        steps.append(
            (
                "カードの証明を確認できませんでした。もう一度確認し、続く場合は番号で確認してください。",
                "The card's proof was not accepted. Retry once; if it persists, check by number.",
            )
        )
        steps += [STEP_BY_NUMBER, STEP_PORTAL_OR_PAPER, STEP_SELF_DECLARATION]
    elif o is Outcome.READER_UNAVAILABLE:
        steps.append(
            (
                "カードリーダーの接続と電源を確認してください（機器の故障）。",
                "Check the card reader's cable and power (device failure).",
            )
        )
        steps += [STEP_BY_NUMBER, STEP_PORTAL_OR_PAPER, STEP_SELF_DECLARATION]
    elif o is Outcome.SERVER_UNREACHABLE:
        # The failure-mode procedure (DOMAIN.md §5, seed 004).
        steps.append(
            (
                "【障害時の手順】資格確認ができないため、次の順に受け付けてください。",
                "[Failure procedure] The check cannot be done now; accept the patient as follows.",
            )
        )
        steps.append(
            (
                "1. " + STEP_PORTAL_OR_PAPER[0] + "提示された負担割合で受け付けます。",
                "1. " + STEP_PORTAL_OR_PAPER[1] + " Charge the burden ratio shown there.",
            )
        )
        steps.append(("2. " + STEP_SELF_DECLARATION[0], "2. " + STEP_SELF_DECLARATION[1]))
        steps.append(
            (
                "3. 「システム障害モード」が発表されている場合は、基本4情報（氏名・性別・生年月日・住所）で"
                "照会できます。",
                "3. If the central 'system failure mode' has been announced, look the "
                "patient up by the basic 4 items (name, sex, birth date, address).",
            )
        )
        steps.append(
            (
                "4. 復旧後、レセプト請求の前に資格を確認してください（請求前資格確認）。保険者が分からない"
                "場合は保険者番号 77777777（不詳）で請求します。",
                "4. Once the service is back, re-check before submitting the claim (pre-submission "
                "check). If the insurer stays unknown, claim with insurer number 77777777 (不詳).",
            )
        )
    elif o is Outcome.SERVER_REFUSED:
        steps.append(
            (
                "この端末のクライアント証明書が受け付けられませんでした。システム管理者に連絡してください。",
                "The server did not accept this terminal's client certificate or role: call the system administrator.",
            )
        )
        steps += [STEP_PORTAL_OR_PAPER, STEP_SELF_DECLARATION]
    elif o is Outcome.INPUT_REJECTED:
        for name, why in result.field_errors:
            steps.append((f"入力を確認してください: {name} — {why}", f"Check the input: {name} — {why}"))
        if not result.field_errors:
            steps.append(("入力を確認してください。", "Check the input."))
    elif o is Outcome.REQUEST_INVALID:
        steps.append(
            (
                "依頼ファイルの形式を確認してください（docs/TERMINAL.md）。",
                "Check the request file's format (docs/TERMINAL.md).",
            )
        )
    else:
        steps += [STEP_PORTAL_OR_PAPER, STEP_SELF_DECLARATION]
    return steps


def warnings(result: Result) -> list[tuple[int, str, str]]:
    """(code, 日本語, English) for the server's warnings, plus the terminal's own
    certificate-expiry warning when the server sent none (it read the card)."""
    out: list[tuple[int, str, str]] = []
    codes = set()
    if result.response is not None:
        for w in result.response.warnings:
            ja, en = WARNING_TEXT.get(w.code, (w.message, w.message))
            out.append(
                (
                    w.code,
                    ja,
                    en + (f" ({w.message})" if w.message and w.code in WARNING_TEXT else ""),
                )
            )
            codes.add(w.code)
    if (
        result.card_not_after is not None
        and result.outcome is not Outcome.CERT_EXPIRED
        and not codes
        & {
            eligibility_pb2.WARNING_CODE_CARD_CERTIFICATE_EXPIRING,
            eligibility_pb2.WARNING_CODE_CARD_CERTIFICATE_EXPIRED,
        }
    ):
        left = result.card_not_after - dt.datetime.now(dt.UTC)
        if dt.timedelta(0) <= left <= dt.timedelta(days=EXPIRY_WARNING_DAYS):
            code = eligibility_pb2.WARNING_CODE_CARD_CERTIFICATE_EXPIRING
            ja, en = WARNING_TEXT[code]
            until = _date(result.card_not_after.date())
            out.append((code, f"{ja}（有効期限 {until}）", f"{en} (valid until {until})"))
    return out


def _qualification_lines(q: qualification_pb2.Qualification) -> list[str]:
    p = q.person
    lines = [f"氏名 Name: {p.name}", f"カナ Kana: {p.name_kana}"]
    if p.sex in SEX:
        lines.append(f"性別 Sex: {SEX[p.sex][0]} {SEX[p.sex][1]}")
    if _date(p.birth_date):
        lines.append(f"生年月日 Birth date: {_date(p.birth_date)}")
    if p.address or p.postcode:
        lines.append(f"住所 Address: {'〒' + p.postcode + ' ' if p.postcode else ''}{p.address}")
    lines.append(f"保険者 Insurer: {q.insurer_number} {q.insurer_name}".rstrip())
    lines.append(f"記号・番号・枝番 Symbol/Number/Branch: {q.symbol or '—'}・{q.number}・{q.branch or '—'}")
    if q.relationship in RELATIONSHIP:
        ja, en = RELATIONSHIP[q.relationship]
        lines.append(f"本人・家族 Insured/Dependent: {ja} {en}")
    if q.card_kind in CARD_KIND:
        ja, en = CARD_KIND[q.card_kind]
        lines.append(f"証の種類 Card kind: {ja} {en}")
    lines.append(f"資格取得日 Acquired: {_date(q.acquisition_date)}")
    if q.HasField("loss_date"):
        reason = LOSS_REASON.get(q.loss_reason)
        lines.append(f"資格喪失日 Lost: {_date(q.loss_date)}" + (f"（{reason[0]} / {reason[1]}）" if reason else ""))
    if q.burden_ratio_percent:
        ja, en = _ratio(q.burden_ratio_percent)
        lines.append(f"負担割合 Burden ratio: {ja} {en}")
    if q.preschool:
        until = f"（{_date(q.preschool_until)} まで / until）" if q.HasField("preschool_until") else ""
        lines.append(f"未就学児 Preschool child: はい yes{until}")
    if q.HasField("elderly_recipient"):
        e = q.elderly_recipient
        ja, en = _ratio(e.burden_ratio_percent)
        lines.append(f"高齢受給者証 Elderly recipient: {ja} {en} {_period(e)}".rstrip())
    if q.HasField("limit_amount"):
        la = q.limit_amount
        name = "限度額適用・標準負担額減額認定証" if la.standard_burden_reduction else "限度額適用認定証"
        lines.append(f"{name} Limit-amount certificate: 区分 {la.category} {_period(la)}".rstrip())
    for sd in q.specific_diseases:
        ja, en = DISEASE.get(sd.disease, ("", ""))
        cap = f" 月額上限 ¥{sd.monthly_cap_yen:,} / monthly cap" if sd.monthly_cap_yen else ""
        lines.append(f"特定疾病療養受療証 Specific disease: {ja} {en}{cap} {_period(sd)}".rstrip())
    for s in q.subsidies:
        terms = []
        if s.burden_ratio_percent:
            terms.append(f"負担 {s.burden_ratio_percent} %")
        if s.monthly_cap_yen:
            terms.append(f"月額上限 ¥{s.monthly_cap_yen:,}")
        lines.append(
            f"公費 Subsidy: {s.programme} 負担者番号 payer {s.payer_number} 受給者番号 recipient "
            f"{s.recipient_number} {' '.join(terms)} {_period(s)}".rstrip()
        )
    return lines


RULE = "─" * 48


def render_text(result: Result) -> str:
    o = result.outcome
    method = ("マイナンバーカード", "My Number card") if result.method == "card" else ("保険証番号", "insurance number")
    lines = [RULE, "資格確認結果 Eligibility check", f"【{o.ja}】 {o.en}"]
    meta = f"確認方法 Method: {method[0]} {method[1]}"
    if result.as_of:
        meta += f"   受診日 Visit date: {result.as_of.isoformat()}"
    lines.append(meta)
    if o is Outcome.PIN_INCORRECT and result.pin_tries_left is not None:
        lines.append(f"残り回数 Tries left: {result.pin_tries_left}")
    lines.append(RULE)
    quals = list(result.response.qualifications) if result.response is not None else []
    for i, q in enumerate(quals, 1):
        if len(quals) > 1:
            lines.append(f"資格 Qualification {i}/{len(quals)}")
        lines += _qualification_lines(q)
        lines.append(RULE)
    warns = warnings(result)
    for _, ja, en in warns:
        lines.append(f"⚠ 注意 {ja}")
        lines.append(f"  Warning: {en}")
    steps = next_steps(result)
    if steps:
        lines.append("次の対応 Next steps:")
        for ja, en in steps:
            lines.append(f"・{ja}")
            lines.append(f"  {en}")
    if result.detail:
        lines.append(f"詳細 Detail: {result.detail}")
    if warns or steps or result.detail:
        lines.append(RULE)
    return "\n".join(lines) + "\n"


def to_dict(result: Result) -> dict:
    """The --json document (and the folder-mode result file)."""
    o = result.outcome
    doc: dict = {
        "outcome": o.key,
        "exit_code": o.exit_code,
        "title": {"ja": o.ja, "en": o.en},
        "method": result.method,
    }
    if result.as_of:
        doc["as_of"] = result.as_of.isoformat()
    if result.response is not None:
        doc["validity"] = eligibility_pb2.Validity.Name(result.response.validity)
        doc["qualifications"] = [
            json_format.MessageToDict(q, preserving_proto_field_name=True) for q in result.response.qualifications
        ]
    doc["warnings"] = [
        {"code": eligibility_pb2.WarningCode.Name(code), "ja": ja, "en": en} for code, ja, en in warnings(result)
    ]
    doc["next_steps"] = [{"ja": ja, "en": en} for ja, en in next_steps(result)]
    if result.pin_tries_left is not None:
        doc["pin_tries_left"] = result.pin_tries_left
    if result.card_serial:
        doc["card"] = {
            "serial": result.card_serial,
            "not_after": result.card_not_after.isoformat() if result.card_not_after else None,
        }
    if result.field_errors:
        doc["field_errors"] = [{"field": f, "description": d} for f, d in result.field_errors]
    if result.detail:
        doc["detail"] = result.detail
    return doc


def to_json(result: Result) -> str:
    return json.dumps(to_dict(result), ensure_ascii=False, indent=2) + "\n"
