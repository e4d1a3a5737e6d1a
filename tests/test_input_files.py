"""Every file a command reads or writes, given wrong: the commands end with
exit status 2 and one line naming the file (and the line, for a bad line), as
docs/CLAIMS.md and docs/INGEST.md promise — never a traceback, never an
endless read (/dev/zero has no line ends), and a run that fails leaves no
half-written output behind."""

from __future__ import annotations

import csv
import io
import os
import subprocess

import pytest

from onshi.core import infile
from tests import ingest_support as s
from tests.claims_helpers import KYOKAI, D, person, qual, write_people
from tests.trust_helpers import pki_dir

CLAIMS = "claim_id,insurer_number,symbol,number,branch,birth_date,first_visit_date\n"
GOOD_CLAIM = f"c1,{KYOKAI},12,345,00,1960-05-01,2024-03-02\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("input-files") / "store"
    write_people(path, [(person("ヤマダ タロウ", D(1960, 5, 1)), [qual(KYOKAI, "12", "345", "00", D(2020, 1, 1))])])
    return path


def run(*args, stdin=None, timeout=60):
    return subprocess.run(
        s.onshi(*map(str, args)),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env={**s._env(), "ONSHI_PKI": ""},
    )


def refused(out, *expected: str) -> str:
    """Exit 2 with one line on stderr that says each of `expected`."""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


# --- text lines ---------------------------------------------------------------------------------


def test_lines_are_bounded_decoded_and_numbered():
    lines = infile.TextLines(io.BytesIO(b"\xef\xbb\xbfa,b\r\nc,d\n" + b"x" * 20), "f.csv", max_line=16)
    it = iter(lines)
    assert next(it) == "a,b\r\n"  # BOM dropped, line end kept (csv wants it)
    assert next(it) == "c,d\n" and lines.line == 2
    with pytest.raises(infile.InputError, match=r"f\.csv: line 3 is longer than 16 bytes"):
        next(it)
    exact = infile.TextLines(io.BytesIO(b"x" * 16 + b"\n"), "f", max_line=16)
    assert list(exact) == ["x" * 16 + "\n"]  # the bound is on the line, not its end
    with pytest.raises(infile.InputError, match=r"f: line 2: not UTF-8 text \(byte 0xff"):
        list(infile.TextLines(io.BytesIO(b"ok\n\xff\xfe\n"), "f"))


# --- onshi claims verify IN OUT ----------------------------------------------------------------------


def test_claims_verify_reads_dev_zero_to_the_line_bound_and_stops(tmp_path, store):
    out = run("claims", "verify", "/dev/zero", tmp_path / "out.csv", "--data", store)
    refused(out, "/dev/zero: line 1 is longer than")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("case", ["missing", "directory", "binary", "oversize field", "open quote"])
def test_claims_verify_bad_input_files(tmp_path, store, case):
    path = tmp_path / "in.csv"
    if case == "missing":
        expected = ("in.csv: No such file or directory",)
    elif case == "directory":
        path.mkdir()
        expected = ("in.csv: Is a directory",)
    elif case == "binary":
        path.write_bytes(CLAIMS.encode() + b"c1,\x80\x81\xfe\n")
        expected = ("line 2: not UTF-8 text",)
    elif case == "oversize field":
        path.write_text(CLAIMS + GOOD_CLAIM + "c2," + "1" * 200_000 + ",12,345,00,1960-05-01,2024-03-02\n")
        expected = ("line 3:", "field larger than field limit")
    else:
        path.write_text(CLAIMS + GOOD_CLAIM + 'c2,"' + "unclosed\n" * 5)
        expected = ("line 7:",)
    (tmp_path / "out.csv").write_text("yesterday's verdicts\n")
    out = run("claims", "verify", path, tmp_path / "out.csv", "--data", store)
    refused(out, "onshi claims verify:", *expected)
    assert (tmp_path / "out.csv").read_text() == "yesterday's verdicts\n"  # not replaced by a half file
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_claims_verify_bad_outputs_and_store(tmp_path, store):
    (tmp_path / "in.csv").write_text(CLAIMS + GOOD_CLAIM)
    (tmp_path / "outdir").mkdir()
    refused(
        run("claims", "verify", tmp_path / "in.csv", tmp_path / "outdir", "--data", store), "outdir: is a directory"
    )
    refused(
        run("claims", "verify", tmp_path / "in.csv", tmp_path / "no" / "out.csv", "--data", store),
        "no/out.csv: No such file or directory",
    )
    refused(
        run("claims", "verify", tmp_path / "in.csv", tmp_path / "out.csv", "--data", tmp_path / "nostore"),
        "onshi claims verify:",
        "nostore",
    )
    # A bad row late in the file: exit 2 naming it, and no verdict file that looks whole.
    (tmp_path / "late.csv").write_text(CLAIMS + GOOD_CLAIM * 3 + "c9,,12,345,00,1960-05-01,2024-03-02\n")
    refused(
        run("claims", "verify", tmp_path / "late.csv", tmp_path / "out.csv", "--data", store, "--batch", "1"),
        "line 5: insurer_number",
    )
    assert not (tmp_path / "out.csv").exists()
    # The good file: written in full, and to a FIFO-like target (/dev/null) directly.
    ok = run("claims", "verify", tmp_path / "in.csv", tmp_path / "out.csv", "--data", store)
    assert ok.returncode == 0, ok.stderr
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as f:
        assert [r["outcome"] for r in csv.DictReader(f)] == ["OK"]
    assert run("claims", "verify", tmp_path / "in.csv", "/dev/null", "--data", store).returncode == 0
    piped = run("claims", "verify", "-", "-", "--data", store, stdin=CLAIMS + GOOD_CLAIM)
    assert piped.returncode == 0 and piped.stdout.startswith("claim_id,outcome"), piped.stderr


# --- onshi ingest-file -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["dev zero", "missing", "directory", "binary", "oversize field", "report dir"])
def test_ingest_file_bad_input_files(tmp_path, case):
    path, extra = tmp_path / "updates.csv", []
    header = "update_id,insurer_number,resident_id,change\n"
    if case == "dev zero":
        path, expected = "/dev/zero", ("/dev/zero: line 1 is longer than",)
        extra = ["--format", "csv"]
    elif case == "missing":
        expected = ("updates.csv: No such file or directory",)
    elif case == "directory":
        path.mkdir()
        expected = ("updates.csv: Is a directory",)
    elif case == "binary":
        path.write_bytes(header.encode() + b"u1,\xc3\x28\n")
        expected = ("line 2: not UTF-8 text",)
    elif case == "oversize field":
        path.write_text(header + "u1,06139992," + "1" * 200_000 + ",loss\n")
        expected = ("line 2:", "field larger than field limit")
    else:
        path.write_text(header + "u1,06139992,10000000001,basic_information\n")
        (tmp_path / "report").mkdir()
        extra = ["--report", tmp_path / "report"]
        expected = ("--report", "Is a directory")
    # A dead port: nothing may be sent (the file is refused first), so no connection is tried.
    out = run("ingest-file", path, "--target", "127.0.0.1:9", *extra)
    refused(out, "onshi ingest-file:", *expected)


# --- other commands that take paths ----------------------------------------------------------------


def test_other_commands_name_a_bad_path_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    refused(run("gen", "--out", tmp_path / "afile", "--persons", "10"), "afile is not a directory")
    refused(run("pki", "init", "--out", tmp_path / "afile"), "Not a directory")
    refused(run("pki", "card", "--pki", tmp_path / "nopki", "--serial", "10"), "No such file", "nopki")
    refused(
        run("serve", "--data", tmp_path / "afile", "--pki", tmp_path / "nopki", "--port", "0"), "No such file", "nopki"
    )
    refused(run("ingest-serve", "--data", tmp_path / "afile", "--pki", pki_dir(), "--port", "0"), "afile")
    refused(run("check", "--card", "1002", "--pki", tmp_path / "nopki"), "not an `onshi pki init` directory")
    refused(
        run(
            "check",
            "--card",
            "1002",
            "--tls-cert",
            tmp_path / "no.pem",
            "--tls-key",
            tmp_path / "no.key",
            "--tls-ca",
            tmp_path / "ca.pem",
        ),
        "cannot read",
        "ca.pem",
    )
