"""Synthetic residents and updates for the ingest tests and bench/ingest.py, the
`onshi ingest-serve` / `onshi serve` subprocesses they run against, and a naive
model of what a stream of updates must leave in the store."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.type import date_pb2

from onshi.core import identifiers
from onshi.core.identifiers import with_check_digit
from onshi.v1 import enrollment_pb2 as pb
from onshi.v1 import qualification_pb2 as qpb
from tests.seams import SEAMS

ROOT = Path(__file__).resolve().parent.parent
EMPLOYEE = with_check_digit("0613999")  # a 健保組合
KYOKAI = with_check_digit("0113001")  # 協会けんぽ
NHI = with_check_digit("13800")  # 市町村国保 (6 digits)
ELDERLY = with_check_digit("3913001")  # 後期高齢者
INSURERS = (EMPLOYEE, KYOKAI, NHI)

SURNAMES = [
    ("山田", "ヤマダ"),
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("髙橋", "タカハシ"),
    ("渡邉", "ワタナベ"),
    ("伊藤", "イトウ"),
    ("中村", "ナカムラ"),
    ("小林", "コバヤシ"),
]
GIVEN = [
    ("太郎", "タロウ"),
    ("花子", "ハナコ"),
    ("ゑみ", "ヱミ"),
    ("ヴィオラ", "ヴィオラ"),
    ("翔", "ショウ"),
    ("優", "ユウ"),
    ("結衣", "ユイ"),
    ("健", "ケン"),
]


def date(text: str) -> date_pb2.Date:
    y, m, d = (int(p) for p in text.split("-"))
    return date_pb2.Date(year=y, month=m, day=d)


def resident_id(i: int) -> str:
    return f"{10_000_000_000 + i:011d}"


def resident(i: int) -> pb.Resident:
    rng = random.Random(i)
    (s, sk), (g, gk) = rng.choice(SURNAMES), rng.choice(GIVEN)
    return pb.Resident(
        resident_id=resident_id(i),
        name=f"{s} {g}",
        name_kana=f"{sk} {gk}",
        birth_date=date(f"{1940 + i % 70}-{1 + i % 12:02d}-{1 + i % 28:02d}"),
        sex=qpb.SEX_MALE if i % 2 else qpb.SEX_FEMALE,
        address=f"東京都千代田区千代田{1 + i % 9}-{1 + i % 20}-{1 + i % 30}",
        postcode="1000001",
    )


def person(r: pb.Resident, *, written_differently: bool = True) -> qpb.Person:
    """The insurer's registration of a resident: same facts, written differently
    (full-width digits, no spaces, half-width kana) when asked."""
    p = qpb.Person(
        name=r.name, name_kana=r.name_kana, sex=r.sex, birth_date=r.birth_date, address=r.address, postcode=r.postcode
    )
    if written_differently:
        p.name = r.name.replace(" ", "")
        p.name_kana = r.name_kana.replace(" ", "\u3000")
        p.address = r.address.translate(str.maketrans("0123456789-", "０１２３４５６７８９－"))
    return p


def acquisition(
    update_id: str,
    insurer: str,
    r: pb.Resident,
    number: str,
    acquired: str,
    *,
    ratio: int = 30,
    relationship: int = qpb.RELATIONSHIP_INSURED,
    symbol: str = "K1",
    branch: str = "00",
) -> pb.EnrollmentUpdate:
    q = qpb.Qualification(
        symbol=symbol,
        number=number,
        branch=branch,
        relationship=relationship,
        acquisition_date=date(acquired),
        burden_ratio_percent=ratio,
        insurer_name="テスト保険",
        card_kind=qpb.CARD_KIND_EMPLOYEE,
    )
    return pb.EnrollmentUpdate(
        update_id=update_id,
        insurer_number=insurer,
        resident_id=r.resident_id,
        person=person(r),
        acquisition=pb.Acquisition(qualification=q),
    )


def loss(
    update_id: str,
    insurer: str,
    r: pb.Resident,
    number: str,
    lost: str,
    *,
    reason: int = qpb.LOSS_REASON_OTHER_INSURANCE,
    symbol: str = "K1",
    branch: str = "00",
) -> pb.EnrollmentUpdate:
    return pb.EnrollmentUpdate(
        update_id=update_id,
        insurer_number=insurer,
        resident_id=r.resident_id,
        person=person(r),
        loss=pb.Loss(
            insured_number=pb.InsuredNumber(symbol=symbol, number=number, branch=branch),
            loss_date=date(lost),
            loss_reason=reason,
        ),
    )


def ratio_change(
    update_id: str,
    insurer: str,
    r: pb.Resident,
    number: str,
    ratio: int,
    *,
    symbol: str = "K1",
    branch: str = "00",
    effective: str = "1900-01-01",
) -> pb.EnrollmentUpdate:
    """A ratio change, by default effective from the acquisition on (a day before
    it), so the naive model's "the qualification's ratio" holds on every day."""
    return pb.EnrollmentUpdate(
        update_id=update_id,
        insurer_number=insurer,
        resident_id=r.resident_id,
        person=person(r),
        burden_ratio_change=pb.BurdenRatioChange(
            insured_number=pb.InsuredNumber(symbol=symbol, number=number, branch=branch),
            burden_ratio_percent=ratio,
            effective_date=date(effective),
        ),
    )


def key(insurer: str, number: str, symbol: str = "K1", branch: str = "00") -> bytes:
    return identifiers.number_key(insurer, symbol, number, branch)


# --- a naive model -------------------------------------------------------------------


@dataclass
class ModelQual:
    insurer: str
    number: str
    acquired: str
    lost: str | None = None
    reason: int = 0
    ratio: int = 30


@dataclass
class Model:
    """What the store must hold after each update applied exactly once."""

    quals: dict[str, list[ModelQual]] = field(default_factory=dict)

    def apply(self, u: pb.EnrollmentUpdate) -> None:
        kind = u.WhichOneof("change")
        mine = self.quals.setdefault(u.resident_id, [])
        if kind == "acquisition":
            q = u.acquisition.qualification
            a = q.acquisition_date
            mine.append(
                ModelQual(
                    u.insurer_number, q.number, f"{a.year:04d}-{a.month:02d}-{a.day:02d}", ratio=q.burden_ratio_percent
                )
            )
            return
        n = getattr(u, kind).insured_number.number
        target = [q for q in mine if q.insurer == u.insurer_number and q.number == n][-1]
        if kind == "loss":
            d = u.loss.loss_date
            target.lost = f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
            target.reason = u.loss.loss_reason
        elif kind == "burden_ratio_change":
            target.ratio = u.burden_ratio_change.burden_ratio_percent

    def rows(self, resident: str) -> list[tuple]:
        return sorted(
            (q.insurer, q.number, q.acquired, q.lost, q.reason, q.ratio) for q in self.quals.get(resident, [])
        )


def store_rows(wtxn, link_id: int | None) -> list[tuple]:
    """The same rows, read back from a history record."""
    if link_id is None:
        return []
    quals = [q for _, q in wtxn.history(link_id)]

    def d(x):
        return f"{x.year:04d}-{x.month:02d}-{x.day:02d}"

    return sorted(
        (
            q.insurer_number,
            q.number,
            d(q.acquisition_date),
            d(q.loss_date) if q.HasField("loss_date") else None,
            q.loss_reason,
            q.burden_ratio_percent,
        )
        for q in quals
    )


def script(residents: int, total: int, seed: int = 7) -> list[pb.EnrollmentUpdate]:
    """`total` valid updates over `residents` people, each person's in order:
    acquisitions, ratio changes, losses, then a new insurer (and its notice)."""
    rng = random.Random(seed)
    people = [resident(i) for i in range(residents)]
    queues: list[list] = []
    per = max(1, total // residents)
    for i, _person in enumerate(people):
        ops = []
        year = 2000
        insurer = INSURERS[i % len(INSURERS)]
        number = f"{i}"
        ops.append(("acq", insurer, number, year))
        while len(ops) < per:
            choice = rng.random()
            if choice < 0.6:
                ops.append(("ratio", insurer, number, rng.choice((10, 20, 30))))
            else:
                year += 1
                new_insurer = INSURERS[(INSURERS.index(insurer) + 1) % len(INSURERS)]
                new_number = f"{i}-{year}"
                # New insurer registers first (the old one still shows them insured:
                # a notice), then the old one registers the loss.
                ops.append(("acq", new_insurer, new_number, year))
                if len(ops) < per:
                    ops.append(("loss", insurer, number, year))
                insurer, number = new_insurer, new_number
        queues.append(ops[:per])
    order = [i for i, ops in enumerate(queues) for _ in ops]
    rng.shuffle(order)
    cursor = [0] * residents
    out = []
    for counter, i in enumerate(order, start=1):
        op = queues[i][cursor[i]]
        cursor[i] += 1
        uid = f"u{counter:07d}"
        r = people[i]
        kind, insurer, number, arg = op
        if kind == "acq":
            out.append(acquisition(uid, insurer, r, number, f"{arg}-04-01"))
        elif kind == "ratio":
            out.append(ratio_change(uid, insurer, r, number, arg))
        else:
            out.append(loss(uid, insurer, r, number, f"{arg}-04-01"))
        if len(out) == total:
            break
    return out


# --- subprocesses ----------------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


def onshi(*args: str) -> list[str]:
    return [sys.executable, "-m", "onshi.cli", *args]


class Proc:
    """A server subprocess that wrote its port to a file."""

    def __init__(self, argv: list[str], port_file: Path, log: Path, timeout: float = 30.0, env: dict | None = None):
        self.port_file = port_file
        with contextlib.suppress(FileNotFoundError):
            port_file.unlink()
        self.log = log
        self.proc = subprocess.Popen(
            argv,
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            env={**_env(), **(env or {})},
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv} exited {self.proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"{argv} did not start:\n{log.read_text()}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.target = f"127.0.0.1:{self.port}"

    def kill(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout=30)

    def stop(self) -> int:
        return self.kill(signal.SIGTERM)


# The claims service hosted by ingest-serve reads through py-lmdb's environment
# whatever the switch (LMDB forbids opening one environment twice in a process:
# server/claims.engine_beside). These tests run ingest-serve on the pure-Python
# twins of every native module (ONSHI_ENGINE, onshi.core.twins); the native ones
# have their own differential tests.
INGEST_ENV = {"ONSHI_ENGINE": "pure"}


def start_ingest(data: Path, tmp: Path, port: int = 0, *extra: str, seams: tuple[str, ...] = ()) -> Proc:
    """`seams`: test-only delays (tests/seams.py options) patched into the server."""
    argv = ["ingest-serve", "--data", str(data), "--port", str(port), "--port-file", str(tmp / "ingest.port"), *extra]
    return Proc(
        [sys.executable, SEAMS, *seams, "--", *argv] if seams else onshi(*argv),
        tmp / "ingest.port",
        tmp / "ingest.log",
        env=INGEST_ENV,
    )


def eligibility_server_available() -> bool:
    return (ROOT / "src" / "server" / "app.py").exists()


def start_eligibility(data: Path, tmp: Path, engine: str | None = None) -> Proc:
    return Proc(
        onshi(
            "serve",
            "--data",
            str(data),
            "--port",
            "0",
            "--workers",
            "1",
            "--port-file",
            str(tmp / "serve.port"),
            *(("--engine", engine) if engine else ()),
        ),
        tmp / "serve.port",
        tmp / "serve.log",
    )
