"""The servers' side of the access log (onshi.core.audit): whom a record is
about, durable writes that refuse the call when the log cannot write, and the
records ClaimService and EnrollmentService write.

The log names persons by a digest of what was presented (a card serial, an
insured number key), never by the number itself, or by their link ID once the
store has resolved them.
"""

from __future__ import annotations

import asyncio
import hashlib

from ..core import audit, history, identifiers
from . import auth
from .errors import service_unavailable

ACCESS_LOG_UNAVAILABLE = "ACCESS_LOG_UNAVAILABLE"


# --- whom a record is about ---------------------------------------------------------


def _digest(key: bytes) -> str:
    return hashlib.blake2b(key, digest_size=12).hexdigest()


def card_subject(serial_key: bytes) -> str:
    return "card:" + _digest(serial_key)


def number_subject(number_key: bytes) -> str:
    return "number:" + _digest(number_key)


def link_subject(link_id: int) -> str:
    return f"link:{link_id}"


def actor(caller: auth.Caller | None) -> str:
    """Who, for a record: role:codes, or "unknown" when not authenticated."""
    return caller.label if caller is not None else "unknown"


def describe_answer(response: bytes) -> str:
    """What a CheckResponse answered, for the record's items: its validity (the
    first field) and how many qualifications and warnings follow, counted from
    the frames of the bytes (no protobuf objects)."""
    validity = response[1] if len(response) >= 2 and response[0] == 0x08 else 0
    quals = warnings = 0
    i = 2 if validity else 0
    n = len(response)
    while i < n:
        tag = response[i]
        length, i = history.read_varint(response, i + 1)
        if tag == 0x12:
            quals += 1
        elif tag == 0x1A:
            warnings += 1
        i += length
    text = f"validity={validity} qualifications={quals}"
    return text + (f" warnings={warnings}" if warnings else "")


# --- writing ------------------------------------------------------------------------


def write_records(log: audit.AuditLog, records) -> None:
    """Append durably; a log that cannot write (disk full, I/O error: it is
    fail-stop, audit.AuditLog) refuses the call with UNAVAILABLE and reason
    ACCESS_LOG_UNAVAILABLE, since no answer may leave without its record."""
    try:
        log.append_many(records)
    except (OSError, RuntimeError) as exc:
        raise service_unavailable(
            ACCESS_LOG_UNAVAILABLE,
            f"the access log cannot be written ({exc}); no data is answered until an operator restores it",
            advice="follow the outage procedure (portal or paper, self-declaration); retry later",
        ) from None


async def log_async(log: audit.AuditLog | None, record: audit.AuditRecord) -> None:
    """Durable append from a grpc.aio handler without blocking the event loop."""
    if log is None:
        return
    await asyncio.get_running_loop().run_in_executor(None, write_records, log, (record,))


# --- ClaimService --------------------------------------------------------------------

_CLAIM_OUTCOMES: dict[int, str] | None = None


def _outcome(value: int):
    global _CLAIM_OUTCOMES
    if _CLAIM_OUTCOMES is None:
        from ..v1 import claims_pb2

        _CLAIM_OUTCOMES = {number: name for name, number in claims_pb2.Outcome.items()}
    return _CLAIM_OUTCOMES.get(value, value)


def write_claims(log: audit.AuditLog, caller: auth.Caller | None, claims, outcomes: bytes) -> None:
    """One record per verified claim, durable before the verdicts are sent (one
    group commit for the batch). Who: `caller`, taken from the call when it
    began (None: not authenticated). Whom: the digest of the billed insured
    number (a 不詳 claim names nobody yet: subject "unknown-claim"). What: each
    claim's Outcome, one byte per claim as the Verifier returned them (the
    response is not parsed again)."""
    if caller is not None:
        purpose = "pre-submission claim check" if caller.role == auth.FACILITY else "claim review (審査)"
    else:
        purpose = "claim review"
    records = []
    for claim, outcome in zip(claims, outcomes, strict=True):
        try:
            subject = number_subject(
                identifiers.number_key(claim.insurer_number, claim.symbol, claim.number, claim.branch)
            )
        except identifiers.InvalidIdentifier:
            subject = "unknown-claim"
        records.append(
            audit.AuditRecord(
                actor=actor(caller),
                action="VerifyClaims",
                subject=subject,
                items=f"claim={claim.claim_id[:40]} verdict={_outcome(outcome)}",
                purpose=purpose,
                request_id=f"{claim.facility_code[:10]}/{claim.claim_id[:40]}",
            )
        )
    write_records(log, records)


# --- EnrollmentService ---------------------------------------------------------------


def update_subject(update) -> str:
    """Whom an enrollment update is about: the digest of its insured number."""
    change = update.WhichOneof("change")
    msg = getattr(update, change) if change else None
    try:
        if msg is not None and hasattr(msg, "qualification") and msg.HasField("qualification"):
            q = msg.qualification
            return number_subject(
                identifiers.number_key(q.insurer_number or update.insurer_number, q.symbol, q.number, q.branch)
            )
        if msg is not None and hasattr(msg, "insured_number"):
            n = msg.insured_number
            return number_subject(identifiers.number_key(update.insurer_number, n.symbol, n.number, n.branch))
    except identifiers.InvalidIdentifier:
        pass
    return "resident:" + _digest(update.resident_id.encode())


class EnrollmentAuditor:
    """One stream's enrollment writes in the access log: noted as updates
    arrive, written (durably, one group commit per ack group) before the acks
    are sent."""

    def __init__(self, log: audit.AuditLog, caller: auth.Caller | None):
        self.log = log
        self.actor = actor(caller)
        self.pending: dict[str, tuple[str, str]] = {}

    def note(self, updates) -> None:
        for u in updates:
            self.pending[u.update_id] = (update_subject(u), u.WhichOneof("change") or "none")

    async def flush(self, acks) -> None:
        records = []
        for ack in acks:
            subject, change = self.pending.pop(ack.update_id, ("", "unknown"))
            if not subject:
                continue
            records.append(
                audit.AuditRecord(
                    actor=self.actor,
                    action="EnrollmentUpdate",
                    subject=subject,
                    items=f"{change} outcome={ack.outcome}",
                    purpose="insurer registration (法定届出)",
                    request_id=ack.update_id[:64],
                )
            )
        if records:
            await asyncio.get_running_loop().run_in_executor(None, write_records, self.log, records)
