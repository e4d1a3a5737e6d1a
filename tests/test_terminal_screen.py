"""The reception screen without a screenshot: for every outcome, the Japanese and
English lines staff read, the next steps of DOMAIN.md §5, the exit code and the
JSON document."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from onshi.terminal import screen
from onshi.terminal.screen import Outcome, Result
from onshi.v1 import eligibility_pb2
from tests.test_terminal_support import NON_JIS_NAME, SATO, SUZUKI, TAKAHASHI, YOSHIDA

E = eligibility_pb2


def response(validity, *people_quals, warnings=()):
    r = E.CheckResponse(validity=validity, warnings=list(warnings))
    for person, quals in people_quals:
        for q in quals:
            q = type(q)(person=person, **{f.name: v for f, v in q.ListFields() if f.name != "person"})
            r.qualifications.append(q)
    return r


def lines(result: Result) -> list[str]:
    return screen.render_text(result).splitlines()


def test_valid_screen_lists_everything_and_no_next_steps():
    p, quals = YOSHIDA
    result = Result(
        Outcome.VALID,
        "card",
        response(E.VALIDITY_VALID, (p, quals[:1])),
        as_of=dt.date(2026, 11, 21),
    )
    out = lines(result)
    assert "【資格有効】 Valid" in out
    assert "確認方法 Method: マイナンバーカード My Number card   受診日 Visit date: 2026-11-21" in out
    assert f"氏名 Name: {NON_JIS_NAME}" in out  # U+20BB7 and the IVS survive: never ●
    assert all("●" not in line for line in out)
    assert "カナ Kana: ヨシダ カツコ" in out
    assert "性別 Sex: 女 female" in out
    assert "生年月日 Birth date: 1980-05-17" in out
    assert "住所 Address: 〒100-0001 東京都千代田区千代田1-1" in out
    assert any(line.startswith("保険者 Insurer: 0613001") and "保険者0613001" in line for line in out)
    assert "記号・番号・枝番 Symbol/Number/Branch: 12・3456・00" in out
    assert "本人・家族 Insured/Dependent: 本人 insured person" in out
    assert "証の種類 Card kind: 被保険者証（健康保険） employee insurance" in out
    assert "資格取得日 Acquired: 2020-04-01" in out
    assert "負担割合 Burden ratio: 3割 30 %" in out
    assert "限度額適用認定証 Limit-amount certificate: 区分 ウ 2026-08-01 〜 2027-07-31" in out
    assert any(
        line.startswith("公費 Subsidy: 難病 負担者番号 payer 54130")
        and "受給者番号 recipient 1234566" in line
        and "負担 20 %" in line
        and "月額上限 ¥10,000" in line
        for line in out
    )
    assert "次の対応 Next steps:" not in out
    assert result.exit_code == 0


def test_invalid_screen_says_when_lost_and_what_to_do():
    p, quals = SUZUKI
    out = lines(Result(Outcome.INVALID, "number", response(E.VALIDITY_INVALID, (p, quals))))
    assert "【資格無効】 Invalid (qualification lost)" in out
    assert "資格喪失日 Lost: 2024-04-01（99 その他 / 99 other）" in out
    assert "・2024-04-01 に資格を喪失しています（99 その他）。" in out
    assert "  The qualification was lost on 2024-04-01 (99 other)." in out
    assert "・マイナポータルの資格情報画面、または資格確認書・保険証の提示を求めてください。" in out
    assert any("My Number portal (マイナポータル)" in line for line in out)
    assert "・提示できない場合は「被保険者資格申立書」に記入いただき、申し立てた負担割合で受け付けてください。" in out
    assert any(
        "self-declaration form (被保険者資格申立書)" in line and "burden ratio they declare" in line for line in out
    )


def test_public_assistance_loss_asks_for_the_medical_ticket():
    p, quals = SUZUKI
    q = type(quals[0])()
    q.CopyFrom(quals[0])
    q.loss_reason = 2
    out = "\n".join(lines(Result(Outcome.INVALID, "card", response(E.VALIDITY_INVALID, (p, [q])))))
    assert "生活保護の医療券の提示を求めてください。" in out and "medical ticket (医療券)" in out
    assert "法定5日以内" not in out  # no new insurer is coming


def test_death_loss_asks_to_confirm_identity():
    p, quals = SUZUKI
    q = type(quals[0])()
    q.CopyFrom(quals[0])
    q.loss_reason = 1
    out = "\n".join(lines(Result(Outcome.INVALID, "card", response(E.VALIDITY_INVALID, (p, [q])))))
    assert "喪失事由は「死亡」です。本人確認を行ってください" in out
    assert "confirm the patient's identity" in out


def test_invalid_newer_exists_sends_staff_to_the_card_or_new_card():
    p, quals = SATO
    out = lines(
        Result(
            Outcome.INVALID_NEWER_EXISTS,
            "number",
            response(E.VALIDITY_INVALID_NEWER_EXISTS, (p, quals[:1])),
        )
    )
    assert "【資格無効（新しい資格あり）】 Invalid (a newer qualification exists)" in out
    text = "\n".join(out)
    assert "マイナンバーカードで確認する（onshi terminal check --card）" in text
    assert "check with the My Number card (onshi terminal check --card)" in text
    assert "被保険者資格申立書" in text


@pytest.mark.parametrize(
    "method, first_ja, first_en",
    [
        (
            "number",
            "・入力した保険者番号・記号・番号・枝番と生年月日を確認してください。",
            "  Check the typed insurer number, symbol, number, branch and birth date.",
        ),
        (
            "card",
            "・このカードは保険資格に紐づいていません。マイナポータルでの登録（初回紐づけ）をご案内ください。",
            "  This card is not linked to a qualification: the patient can link it through the My Number portal (初回紐づけ).",
        ),
    ],
)
def test_no_record_screen(method, first_ja, first_en):
    out = lines(Result(Outcome.NO_RECORD, method, response(E.VALIDITY_NO_RECORD)))
    assert "【該当資格なし】 No record" in out
    i = out.index("次の対応 Next steps:")
    assert out[i + 1] == first_ja and out[i + 2] == first_en
    assert "・加入直後は保険者の登録まで数日（法定5日以内）かかることがあります。" in out
    assert "  A newly insured person may not be registered yet (insurers have up to 5 days)." in out
    assert any("被保険者資格申立書" in line for line in out)


def test_multiple_screen_shows_each_qualification():
    p, quals = TAKAHASHI
    out = lines(Result(Outcome.MULTIPLE, "card", response(E.VALIDITY_MULTIPLE, (p, quals))))
    assert "【複数該当】 Multiple qualifications" in out
    assert "資格 Qualification 1/2" in out and "資格 Qualification 2/2" in out
    assert "証の種類 Card kind: 船員保険 seamen's insurance" in out
    assert "証の種類 Card kind: 後期高齢者医療 late-elderly" in out
    assert "負担割合 Burden ratio: 1割 10 %" in out
    assert any("どの保険者に請求するか患者に確認してください" in line for line in out)
    assert any("Confirm with the patient which insurer to bill." in line for line in out)


FAILURES = [
    (
        Result(Outcome.NO_CARD, "card"),
        20,
        "【カードが読み取れません】 No card in the reader",
        "・カードをカードリーダーに置き直して、もう一度確認してください。",
        "  Place the card on the reader again and retry.",
    ),
    (
        Result(Outcome.CARD_REMOVED, "card"),
        21,
        "【カードが取り外されました】 Card removed while reading",
        "・読み取り中にカードが外れました。カードを置いたまま、もう一度確認してください。",
        "  The card left the reader while it was being read: place it again, keep it there, and retry.",
    ),
    (
        Result(Outcome.NOT_MY_NUMBER_CARD, "card"),
        22,
        "【マイナンバーカードではありません】 Not a My Number card",
        "・マイナンバーカードを置いてください。",
        "  Place a My Number card on the reader.",
    ),
    (
        Result(Outcome.PIN_INCORRECT, "card", pin_tries_left=2),
        23,
        "【暗証番号が違います】 PIN incorrect",
        "・残り2回です。2回続けて間違えるとロックされます。もう一度入力いただくか、顔認証付きカードリーダーでの確認に切り替えてください。",
        "  2 tries left; 2 more wrong PINs lock it. Let the patient try again, or switch to face verification.",
    ),
    (
        Result(Outcome.PIN_BLOCKED, "card", pin_tries_left=0),
        24,
        "【暗証番号がロックされています】 PIN blocked",
        "・暗証番号はロックされています。本人が市区町村窓口で再設定する必要があります。",
        "  The PIN is locked: the patient must have it reset at the municipal office.",
    ),
    (
        Result(Outcome.CERT_EXPIRED, "card", card_not_after=dt.datetime(2026, 1, 31, tzinfo=dt.UTC)),
        25,
        "【電子証明書の有効期限切れ】 Card certificate expired",
        "・カードの電子証明書の有効期限が切れています（2026-01-31）。本人が市区町村窓口で更新する必要があります。",
        "  The card's certificate has expired (2026-01-31): the patient must renew it at the municipal office.",
    ),
    (
        Result(Outcome.CERT_REVOKED, "card"),
        26,
        "【電子証明書が失効しています】 Card certificate revoked",
        "・カードの電子証明書は失効しています。本人が市区町村窓口で再発行を受ける必要があります。",
        "  The card's certificate is revoked: the patient must have it reissued at the municipal office.",
    ),
    (
        Result(Outcome.CARD_REFUSED, "card"),
        27,
        "【カードを確認できません】 Card could not be verified",
        "・カードの証明を確認できませんでした。もう一度確認し、続く場合は番号で確認してください。",
        "  The card's proof was not accepted. Retry once; if it persists, check by number.",
    ),
    (
        Result(Outcome.READER_UNAVAILABLE, "card"),
        28,
        "【カードリーダーが使用できません】 Card reader unavailable",
        "・カードリーダーの接続と電源を確認してください（機器の故障）。",
        "  Check the card reader's cable and power (device failure).",
    ),
    (
        Result(Outcome.SERVER_UNREACHABLE, "number"),
        30,
        "【資格確認システムに接続できません】 Eligibility service unreachable",
        "・【障害時の手順】資格確認ができないため、次の順に受け付けてください。",
        "  [Failure procedure] The check cannot be done now; accept the patient as follows.",
    ),
    (
        Result(Outcome.SERVER_REFUSED, "number"),
        31,
        "【この端末は接続を拒否されました】 This terminal was refused",
        "・この端末のクライアント証明書が受け付けられませんでした。システム管理者に連絡してください。",
        "  The server did not accept this terminal's client certificate or role: call the system administrator.",
    ),
    (
        Result(
            Outcome.INPUT_REJECTED,
            "number",
            field_errors=[("insurer_number", "check digit does not match")],
        ),
        32,
        "【入力内容に誤りがあります】 Input rejected",
        "・入力を確認してください: insurer_number — check digit does not match",
        "  Check the input: insurer_number — check digit does not match",
    ),
    (
        Result(Outcome.REQUEST_INVALID, "number", detail="birth_date: must be YYYY-MM-DD"),
        33,
        "【依頼ファイルを読めません】 Request file not readable",
        "・依頼ファイルの形式を確認してください（docs/TERMINAL.md）。",
        "  Check the request file's format (docs/TERMINAL.md).",
    ),
    (
        Result(Outcome.ERROR, "card", detail="terminal configuration: no facility code"),
        1,
        "【予期しないエラー】 Unexpected error",
        "・マイナポータルの資格情報画面、または資格確認書・保険証の提示を求めてください。",
        "  Ask for the My Number portal (マイナポータル) qualification screen, or the eligibility "
        "certificate (資格確認書) / insurance card.",
    ),
]


@pytest.mark.parametrize("result, code, title, first_ja, first_en", FAILURES, ids=[f[0].outcome.key for f in FAILURES])
def test_failure_screens_say_what_happened_and_what_next(result, code, title, first_ja, first_en):
    out = lines(result)
    assert title in out
    i = out.index("次の対応 Next steps:")
    assert out[i + 1] == first_ja
    assert out[i + 2] == first_en
    assert result.exit_code == code
    doc = json.loads(screen.to_json(result))
    assert doc["exit_code"] == code and doc["outcome"] == result.outcome.key
    assert doc["title"] == {"ja": result.outcome.ja, "en": result.outcome.en}
    assert doc["next_steps"][0] == {"ja": first_ja[1:], "en": first_en.strip()}


def test_unreachable_screen_is_the_failure_mode_procedure():
    out = lines(Result(Outcome.SERVER_UNREACHABLE, "card", detail="UNAVAILABLE: connection refused"))
    text = "\n".join(out)
    assert (
        "・1. マイナポータルの資格情報画面、または資格確認書・保険証の提示を求めてください。提示された負担割合で受け付けます。"
        in out
    )
    assert (
        "・2. 提示できない場合は「被保険者資格申立書」に記入いただき、申し立てた負担割合で受け付けてください。" in out
    )
    assert (
        "基本4情報（氏名・性別・生年月日・住所）" in text and "basic 4 items (name, sex, birth date, address)" in text
    )
    assert "請求前資格確認" in text and "pre-submission check" in text and "77777777" in text
    assert "詳細 Detail: UNAVAILABLE: connection refused" in out


def test_exit_codes_are_distinct():
    codes = [o.exit_code for o in Outcome]
    assert len(codes) == len(set(codes))
    assert 2 not in codes  # argparse's usage error keeps its own code
    # The 資格有効性 answers exit as `onshi check` does: 10 + the validity code.
    for validity, outcome in screen.BY_VALIDITY.items():
        assert outcome.exit_code == (0 if validity == E.VALIDITY_VALID else 10 + validity)


def test_every_non_valid_outcome_has_next_steps():
    for outcome in Outcome:
        if outcome is Outcome.VALID:
            continue
        result = Result(outcome, "number", response=E.CheckResponse(), pin_tries_left=1)
        assert screen.next_steps(result), outcome


def test_server_warnings_are_shown_in_both_languages():
    p, quals = YOSHIDA
    r = response(
        E.VALIDITY_VALID,
        (p, quals),
        warnings=[
            E.Warning(
                code=E.WARNING_CODE_CARD_CERTIFICATE_EXPIRING,
                message="card certificate expires on 2027-01-05",
            )
        ],
    )
    out = lines(Result(Outcome.VALID, "card", r))
    assert "⚠ 注意 カードの電子証明書の有効期限が近づいています。市区町村窓口での更新をご案内ください。" in out
    assert (
        "  Warning: The card certificate expires soon: ask the patient to renew it at the municipal office. "
        "(card certificate expires on 2027-01-05)"
    ) in out


def test_terminal_warns_itself_when_the_card_certificate_expires_soon():
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=40)
    p, quals = YOSHIDA
    result = Result(Outcome.VALID, "card", response(E.VALIDITY_VALID, (p, quals)), card_not_after=soon)
    out = lines(result)
    assert any(
        line.startswith("⚠ 注意 カードの電子証明書の有効期限が近づいています") and soon.date().isoformat() in line
        for line in out
    )
    later = Result(
        Outcome.VALID,
        "card",
        response(E.VALIDITY_VALID, (p, quals)),
        card_not_after=soon + dt.timedelta(days=100),
    )
    assert not any(line.startswith("⚠") for line in lines(later))


def test_json_keeps_the_name_as_registered():
    p, quals = YOSHIDA
    doc = json.loads(
        screen.to_json(Result(Outcome.VALID, "card", response(E.VALIDITY_VALID, (p, quals)), card_serial="1001"))
    )
    assert doc["qualifications"][0]["person"]["name"] == NON_JIS_NAME
    assert doc["validity"] == "VALIDITY_VALID" and doc["card"]["serial"] == "1001"


def test_preschool_shows_its_last_day():
    """The answer carries preschool status with its last day (the 31 March after
    the child reaches six); the screen shows both, so staff know it ends."""
    from onshi.v1 import qualification_pb2 as Q

    q = Q.Qualification(
        insurer_number="01130012",
        number="1",
        acquisition_date={"year": 2020, "month": 4, "day": 1},
        burden_ratio_percent=20,
        preschool=True,
        preschool_until={"year": 2026, "month": 3, "day": 31},
    )
    lines = screen._qualification_lines(q)
    assert any("未就学児" in line and "2026-03-31" in line for line in lines), lines
