"""Folder mode for HIS / receipt-computer integration, like the vendor apps:
`onshi terminal watch REQ_DIR RES_DIR` answers every request file in REQ_DIR
with a result file of the same name in RES_DIR.

Guarantees:
* **atomic** — a result is written to a hidden temporary file, fsynced, and
  then hard-linked into place (and the directory fsynced): a reader sees either
  no result or the whole result, never a partial file;
* **never twice** — os.link fails if the result already exists, so an answer
  is never replaced, also with two watchers on one folder;
* **survives restarts** — "done" is "the result exists": after a crash (even
  SIGKILL mid-batch) the next start skips every answered request, removes
  temporary files left by dead watchers and answers the rest, in name order.

Request files are JSON (docs/TERMINAL.md); the HIS must create them atomically
too (write `.name.tmp`, then rename to `name.json`): names starting with "." and
not ending in ".json" are ignored. Anything under a request name that is not a
regular file of at most MAX_REQUEST_BYTES (a FIFO, a device, a directory, a
socket) is answered `request_invalid` without being read, so nothing in the
folder can block the watcher or make it read without end.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import stat
import sys
import threading
from collections.abc import Callable

from . import screen
from .client import ServerConfig
from .screen import Outcome, Result

_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")
MAX_REQUEST_BYTES = 64 * 1024  # a request is a few hundred bytes of JSON


def pending(req_dir: str, res_dir: str) -> list[str]:
    """Request names without a result, in name order."""
    done = set(os.listdir(res_dir))
    return sorted(n for n in os.listdir(req_dir) if n.endswith(".json") and not n.startswith(".") and n not in done)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_result_once(res_dir: str, name: str, data: bytes) -> bool:
    """Publish RES_DIR/name atomically; False if it already exists (left as is)."""
    tmp = os.path.join(res_dir, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, os.path.join(res_dir, name))
        except FileExistsError:
            return False
    finally:
        os.unlink(tmp)
    _fsync_dir(res_dir)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(res_dir: str) -> int:
    """Temporary files of watchers that died mid-write (SIGKILL, power loss)."""
    removed = 0
    for n in os.listdir(res_dir):
        m = _TMP.match(n)
        if m and (int(m["pid"]) == os.getpid() or not _alive(int(m["pid"]))):
            try:
                os.unlink(os.path.join(res_dir, n))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _date(text: str | None, field: str) -> dt.date | None:
    if text in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise ValueError(f"{field}: must be YYYY-MM-DD") from None


def answer_request(request: dict, config: ServerConfig, conn=None) -> Result:
    """One request document -> Result. Kinds: "number" (typed card) and "card"
    (read the card on this terminal's reader; the PIN is asked here)."""
    from . import check

    kind = request.get("kind", "number")
    as_of = _date(request.get("as_of"), "as_of")
    if kind == "number":
        missing = [k for k in ("insurer_number", "number", "birth_date") if not request.get(k)]
        if missing:
            raise ValueError(", ".join(f"{k}: required" for k in missing))
        birth = _date(request["birth_date"], "birth_date")
        assert birth is not None  # required above
        return check.check_number(
            config,
            str(request["insurer_number"]),
            str(request.get("symbol", "")),
            str(request["number"]),
            str(request.get("branch", "")),
            birth,
            as_of=as_of,
            conn=conn,
        )
    if kind == "card":
        return check.check_card(config, reader_name=request.get("reader"), as_of=as_of, conn=conn)
    raise ValueError('kind: must be "number" or "card"')


def read_request(path: str) -> bytes:
    """The bytes of a request file. Opened without blocking (a FIFO with no
    writer would wait forever) and read only when it is a regular file, at most
    MAX_REQUEST_BYTES; ValueError otherwise (FileNotFoundError if withdrawn)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(f"request file cannot be opened: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("a request must be a regular file (not a FIFO, device or directory)")
        data = b""
        while len(data) <= MAX_REQUEST_BYTES and (chunk := os.read(fd, MAX_REQUEST_BYTES + 1 - len(data))):
            data += chunk
    finally:
        os.close(fd)
    if len(data) > MAX_REQUEST_BYTES:
        raise ValueError(f"a request is at most {MAX_REQUEST_BYTES:,} bytes")
    return data


def process_one(
    req_dir: str,
    res_dir: str,
    name: str,
    config: ServerConfig,
    conn=None,
    answer: Callable[..., Result] = answer_request,
) -> Result | None:
    """Answer one request; None if another watcher answered it meanwhile."""
    try:
        request = json.loads(read_request(os.path.join(req_dir, name)).decode("utf-8"))
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        result = answer(request, config, conn)
    except FileNotFoundError:
        return None  # withdrawn by the HIS before we got to it
    except RecursionError:  # JSON nested deeper than the parser goes
        result = Result(Outcome.REQUEST_INVALID, "number", detail="JSON nested too deep")
    except (ValueError, UnicodeDecodeError) as exc:
        result = Result(Outcome.REQUEST_INVALID, "number", detail=str(exc))
    doc = screen.to_dict(result)
    doc["request"] = name
    doc["answered_at"] = dt.datetime.now(dt.UTC).isoformat()
    data = (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    return result if write_result_once(res_dir, name, data) else None


def watch(
    req_dir: str,
    res_dir: str,
    config: ServerConfig,
    *,
    once: bool = False,
    interval: float = 0.5,
    stop: threading.Event | None = None,
    out=sys.stdout,
) -> int:
    """Answer requests until stopped (SIGTERM/SIGINT), or until none is left with once=True."""
    for d in (req_dir, res_dir):
        if not os.path.isdir(d):
            print(f"onshi terminal watch: {d} is not a directory", file=sys.stderr)
            return 2
    if stop is None:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    from .client import ConfigError, EligibilityConnection

    remove_stale_temporaries(res_dir)
    try:
        # One connection for the whole run: a TLS handshake per request would
        # cost more than the check (gRPC reconnects by itself after an outage).
        conn = EligibilityConnection(config)
    except (ConfigError, OSError) as exc:
        print(f"onshi terminal watch: {exc}", file=sys.stderr)
        return 2
    with conn:
        while not stop.is_set():
            try:
                batch = pending(req_dir, res_dir)
            except OSError as exc:  # a folder removed or made unreadable under us
                print(f"onshi terminal watch: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
                return 2
            for name in batch:
                if stop.is_set():
                    break
                result = process_one(req_dir, res_dir, name, config, conn)
                if result is not None:
                    print(
                        f"answered {name} {result.outcome.key} exit={result.exit_code}",
                        file=out,
                        flush=True,
                    )
            if once and not batch:
                break
            if not batch:
                stop.wait(interval)
    return 0
