"""`onshi audit verify|anchor|compact|show|keygen|seal`: the access log (onshi.core.audit) for the operator."""

from __future__ import annotations

import fcntl
import json
import os
import struct
import time

from ..core.audit import (
    DEFAULT_RETENTION_DAYS,
    KEY_BYTES,
    MANIFEST,
    AuditRecord,
    ManifestError,
    SegmentScan,
    anchor_of,
    check_manifest,
    compact_stream,
    decode,
    key_id,
    load_key,
    scan_segment,
    seal,
    segment_files,
    streams,
    verify,
)


def _key_arg(args) -> bytes | None:
    return load_key(args.key) if getattr(args, "key", None) else None


def _cmd_verify(args) -> int:
    try:
        key = _key_arg(args)
        against = None
        if args.against:
            with open(args.against, "rb") as f:
                against = json.loads(f.read(1 << 20))
            if not isinstance(against, dict) or not isinstance(against.get("streams"), dict):
                raise ValueError(f"{args.against}: not an `onshi audit anchor` file")
    except (OSError, ValueError) as exc:
        print(f"onshi audit verify: {exc}")
        return 2
    report = verify(args.dir, key, against)
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"TAMPERED: {problem}")
    state = "OK" if report.ok else "FAILED"
    checked = " (MACs checked)" if key else ""
    print(
        f"audit verify {state}{checked}: {report.streams} streams, {report.segments} segments, {report.records} records"
    )
    return 0 if report.ok else 1


def _cmd_anchor(args) -> int:
    try:
        key = _key_arg(args)
    except (OSError, ValueError) as exc:
        print(f"onshi audit anchor: {exc}")
        return 2
    report = verify(args.dir, key)
    if not report.ok:
        for problem in report.problems:
            print(f"TAMPERED: {problem}")
        print("onshi audit anchor: the log does not verify; no anchor written")
        return 1
    print(json.dumps(anchor_of(args.dir), sort_keys=True))
    return 0


def _cmd_keygen(args) -> int:
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        print(f"onshi audit keygen: {args.out}: {exc.strerror} (an existing key is never replaced)")
        return 2
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(KEY_BYTES).hex() + "\n")
    print(
        f"audit key written to {args.out} (keep it off the log's disk; the servers and `onshi audit verify` "
        f"need it; key id {key_id(load_key(args.out))})"
    )
    return 0


def _cmd_seal(args) -> int:
    try:
        key = _key_arg(args)
    except (OSError, ValueError) as exc:
        print(f"onshi audit seal: {exc}")
        return 2
    problems = seal(args.dir, key)
    for problem in problems:
        print(f"not sealed: {problem}")
    if problems:
        return 1
    print(f"{args.dir}: every stream recorded in {MANIFEST}" + (" and sealed with the key" if key else ""))
    return 0


def _cmd_compact(args) -> int:
    try:
        key = _key_arg(args)
        check_manifest(args.dir, key)
    except (OSError, ValueError, ManifestError) as exc:
        print(f"onshi audit compact: {exc}")
        return 2
    total = 0
    for stream_dir in streams(args.dir):
        lock = open(os.path.join(stream_dir, "lock"), "a+b")  # noqa: SIM115 - held past this block, closed below
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{stream_dir}: in use by a running server (it compacts itself); skipped")
            lock.close()
            continue
        try:
            total += len(compact_stream(stream_dir, args.retention_days, time.time_ns(), key=key))
        finally:
            lock.close()
    print(f"dropped {total} segments older than {args.retention_days:g} days")
    return 0


def _cmd_show(args) -> int:
    """Every record, or one person's; a segment that is not a readable onshi
    audit segment ends it with one line and exit 2 (verify says more)."""
    if not os.path.isdir(args.dir):
        print(f"onshi audit show: {args.dir}: no such directory")
        return 2
    link = args.link_id
    for stream_dir in streams(args.dir):
        for _, path in segment_files(stream_dir):
            found: list[AuditRecord] = []

            def visit(_pos, body, found=found):
                try:
                    rec = decode(body)
                except (ValueError, UnicodeDecodeError, struct.error) as exc:
                    raise ValueError(f"undecodable record ({exc})") from None
                if not link or rec.link_id == link:
                    found.append(rec)

            try:
                scan = scan_segment(path, visit)
            except (OSError, ValueError) as exc:
                scan = SegmentScan(error=str(exc))
            for rec in found:
                when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(rec.time_ns / 1e9))
                flag = " EMERGENCY" if rec.emergency else ""
                print(
                    f"{when}Z {rec.actor} {rec.action} link={rec.link_id} {rec.subject} [{rec.items}] "
                    f"purpose={rec.purpose}{flag}"
                )
            if scan.error and not scan.torn:
                print(f"onshi audit show: {path}: {scan.error} (run `onshi audit verify --dir {args.dir}`)")
                return 2
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("audit", help="the access log: verify, anchor, compact, show, keygen, seal")
    sub = p.add_subparsers(dest="audit_command", required=True)
    v = sub.add_parser(
        "verify",
        help="check the hash chains, heads and manifest; exit 1 if anything was edited, removed, inserted or deleted",
    )
    v.add_argument("--dir", required=True)
    v.add_argument("--key", help="the audit key file: check the MACs of the heads and the manifest")
    v.add_argument(
        "--against",
        metavar="ANCHOR",
        help="an earlier `onshi audit anchor` output kept elsewhere: fail if the log no longer reaches it",
    )
    v.set_defaults(func=_cmd_verify)
    a = sub.add_parser("anchor", help="verify, then print where every stream is now (JSON): keep it off the host")
    a.add_argument("--dir", required=True)
    a.add_argument("--key")
    a.set_defaults(func=_cmd_anchor)
    c = sub.add_parser("compact", help="drop segments older than the retention (streams not in use)")
    c.add_argument("--dir", required=True)
    c.add_argument("--retention-days", type=float, default=DEFAULT_RETENTION_DAYS)
    c.add_argument("--key", help="the audit key file (a keyed log)")
    c.set_defaults(func=_cmd_compact)
    s = sub.add_parser("show", help="print records (optionally one person's)")
    s.add_argument("--dir", required=True)
    s.add_argument("--link-id", type=int, default=0)
    s.set_defaults(func=_cmd_show)
    k = sub.add_parser("keygen", help="write a new audit key (64 hex digits) to a file that must not exist")
    k.add_argument("--out", required=True)
    k.set_defaults(func=_cmd_keygen)
    e = sub.add_parser(
        "seal",
        help="record every stream in a new manifest (a log from an older onshi), or key "
        "an unkeyed log; servers stopped",
    )
    e.add_argument("--dir", required=True)
    e.add_argument("--key")
    e.set_defaults(func=_cmd_seal)
