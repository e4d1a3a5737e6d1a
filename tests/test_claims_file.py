"""`onshi claims verify IN OUT` as review staff run it: a real store, CSV files,
the real command in a subprocess (local store, and through ingest-serve)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from tests.claims_helpers import KUMIAI, KYOKAI, NHI, D, person, qual, write_people
from tests.test_claims_server import IngestServe

TARO = D(1960, 5, 1)
HANAKO = D(1952, 2, 2)
HEADER = [
    "claim_id",
    "facility_code",
    "insurer_number",
    "symbol",
    "number",
    "branch",
    "birth_date",
    "first_visit_date",
    "last_visit_date",
    "visit_days",
    "kind",
    "points",
    "decl_name_kana",
    "decl_sex",
    "decl_address",
]
ROWS = [
    [
        "c1",
        "1310000001",
        KYOKAI,
        "12",
        "345",
        "00",
        "1960-05-01",
        "2024-03-02",
        "2024-03-30",
        "2;16;30",
        "medical",
        "900",
        "",
        "",
        "",
    ],
    [
        "c2",
        "1310000001",
        "０１１３００１２",
        "１２",
        "３４５",
        "0",
        "1960-05-01",
        "2024-04-02",
        "",
        "",
        "dental",
        "420",
        "",
        "",
        "",
    ],
    [
        "c3",
        "1310000001",
        KYOKAI,
        "12",
        "777",
        "00",
        "1952-02-02",
        "2024-04-03",
        "2024-04-20",
        "3;10",
        "pharmacy",
        "301",
        "",
        "",
        "",
    ],
    [
        "c4",
        "1310000001",
        "77777777",
        "",
        "777777777",
        "",
        "1952-02-02",
        "2024-04-20",
        "",
        "",
        "medical",
        "50",
        "すずき はなこ",
        "F",
        "大阪府大阪市北区梅田2-2-2",
    ],
    [
        "c5",
        "1310000001",
        "77777777",
        "",
        "777777777",
        "",
        "1999-01-01",
        "2024-04-20",
        "",
        "",
        "medical",
        "50",
        "ダレ",
        "M",
        "",
    ],
    ["c6", "1310000001", KYOKAI, "12", "999", "00", "1960-05-01", "2024-04-02", "", "", "medical", "10", "", "", ""],
]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store"
    write_people(
        path,
        [
            (
                person("ヤマダ タロウ", TARO),
                [
                    qual(KYOKAI, "12", "345", "00", D(2020, 1, 1), D(2024, 4, 1)),
                    qual(KUMIAI, "A", "9", "00", D(2024, 4, 1)),
                ],
            ),
            (
                person("スズキ ハナコ", HANAKO, sex=2, address="大阪府大阪市北区梅田2-2-2"),
                [
                    qual(KYOKAI, "12", "777", "00", D(2015, 1, 1), D(2024, 4, 15)),
                    qual(NHI, "国", "1-2", "00", D(2024, 4, 15)),
                ],
            ),
        ],
    )
    return path


def write_csv(path, rows, header=HEADER):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "onshi.cli", "claims", "verify", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def read_out(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def check_verdicts(out):
    assert [r["claim_id"] for r in out] == ["c1", "c2", "c3", "c4", "c5", "c6"]
    assert [r["outcome"] for r in out] == ["OK", "REROUTE", "SPLIT", "RESOLVED_UNKNOWN", "UNRESOLVED", "RETURN"]
    assert (out[1]["insurer_number"], out[1]["symbol"], out[1]["number"]) == (KUMIAI, "A", "9")
    assert (
        out[2]["segments"]
        == f"{KYOKAI}/12/777/00 2024-04-03..2024-04-10 201;{NHI}/国/1-2/00 2024-04-20..2024-04-20 100"
    )
    assert out[2]["flags"] == ""
    assert out[3]["insurer_number"] == NHI
    assert out[5]["return_reason"] == "NUMBER_NOT_FOUND"


def test_verify_file_against_local_store(tmp_path, store):
    write_csv(tmp_path / "in.csv", ROWS)
    r = run(tmp_path / "in.csv", tmp_path / "out.csv", "--data", store, "--progress")
    assert r.returncode == 0, r.stderr
    check_verdicts(read_out(tmp_path / "out.csv"))
    assert "claims/s" in r.stderr and "100%" in r.stderr
    summary = dict(line.split() for line in r.stdout.splitlines()[1:])
    assert r.stdout.startswith("6 claims verified")
    assert summary == {
        "OK": "1",
        "REROUTE": "1",
        "SPLIT": "1",
        "RESOLVED_UNKNOWN": "1",
        "UNRESOLVED": "1",
        "RETURN": "1",
    }


def test_verify_file_through_the_service(tmp_path, store):
    write_csv(tmp_path / "in.csv", ROWS)
    server = IngestServe(store, tmp_path)
    try:
        r = run(tmp_path / "in.csv", tmp_path / "out.csv", "--target", f"127.0.0.1:{server.port}", "--batch", "4")
    finally:
        server.stop()
    assert r.returncode == 0, r.stderr
    check_verdicts(read_out(tmp_path / "out.csv"))


def test_bad_rows_name_the_line(tmp_path, store):
    bad_date = [row[:] for row in ROWS]
    bad_date[2][7] = "2024-13-01"
    write_csv(tmp_path / "a.csv", bad_date)
    r = run(tmp_path / "a.csv", tmp_path / "out.csv", "--data", store)
    assert r.returncode == 2 and "line 4: first_visit_date" in r.stderr
    across = [row[:] for row in ROWS]
    across[4][8] = "2024-05-01"  # a period across months: the verifier's own check
    write_csv(tmp_path / "b.csv", across)
    r = run(tmp_path / "b.csv", tmp_path / "out.csv", "--data", store, "--batch", "2")
    assert r.returncode == 2 and "line 6: last_visit_date" in r.stderr, r.stderr
    write_csv(tmp_path / "c.csv", [["x"]], header=["claim_id"])
    r = run(tmp_path / "c.csv", tmp_path / "out.csv", "--data", store)
    assert r.returncode == 2 and "column missing" in r.stderr


def test_a_declaration_may_list_several_addresses(store, tmp_path):
    """Seed 004: 住所（複数存在する場合は全て） — `decl_other_addresses` carries the
    further addresses (separated by |); one of them matching is enough."""
    header = [*HEADER, "decl_other_addresses"]
    row = [
        "c1",
        "1310000001",
        "77777777",
        "",
        "777777777",
        "",
        "1952-02-02",
        "2024-04-20",
        "",
        "",
        "medical",
        "50",
        "すずき はなこ",
        "F",
        "沖縄県那覇市泉崎1-1",
    ]
    write_csv(tmp_path / "in.csv", [[*row, ""], ["c2", *row[1:], "北海道札幌市1-1|大阪府大阪市北区梅田2-2-2"]], header)
    out = run("--data", store, tmp_path / "in.csv", tmp_path / "out.csv")
    assert out.returncode == 0, out.stderr
    assert [r["outcome"] for r in read_out(tmp_path / "out.csv")] == ["UNRESOLVED", "RESOLVED_UNKNOWN"]
