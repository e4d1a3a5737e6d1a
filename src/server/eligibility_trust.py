"""EligibilityService's trust hooks (eligibility_service: `card_proof`, `audit`).

The caller comes from the role interceptor, which took it once for the call
(auth: a behaviour marked `takes_caller` receives it); both hooks also work on
a server without the interceptor, where they take it from the call themselves.
The card proof's serial key reaches the access record through the service (it
is the key the engine looked up), so the record names what was answered
without a second look at the proof.
"""

from __future__ import annotations

import grpc

from ..core import audit, cardproof, identifiers
from ..core.cardproof import CardVerifier
from . import auth, trust_status
from .access_log import actor, card_subject, describe_answer, number_subject, write_records
from .errors import refused

PURPOSE_KEY = "x-onshi-purpose"
REQUEST_ID_KEY = "x-request-id"
DEFAULT_PURPOSE = {
    "CheckByCard": "qualification check at a visit",
    "CheckByNumber": "qualification check at a visit",
}


class EligibilityTrust:
    """The card_proof and audit hooks for app.create_server."""

    TRUSTED_BARE_SERIAL = frozenset({auth.REVIEW, auth.OPERATOR, auth.DEV})

    def __init__(self, verifier: CardVerifier | None, log: audit.AuditLog | None):
        self.verifier = verifier
        self.log = log

    def card_proof(self, request, caller: auth.Caller | None, context) -> tuple[bytes, bytes]:
        """(serial key, warnings to append): the verified card proof's, or a bare
        card_serial from an internal role. Raises StatusError when refused."""
        try:
            if caller is None:
                caller = auth.caller_of(context)
            if request.card_certificate or request.card_signature or request.HasField("challenge"):
                if self.verifier is None:
                    raise refused(
                        grpc.StatusCode.FAILED_PRECONDITION, "card proof verification is not configured on this server"
                    )
                facility = caller.facility_code if caller.role == auth.FACILITY else None
                if caller.role == auth.FACILITY and facility is None:
                    raise auth.denied("facility caller without a facility code")
                proof = self.verifier.verify_request(request, facility, purpose=cardproof.PURPOSE_CHECK_BY_CARD)
                return proof.serial_key, proof.warnings
            if caller.role not in self.TRUSTED_BARE_SERIAL:
                raise auth.denied(
                    "a bare card_serial is accepted only from internal roles; "
                    "send the card proof (card_certificate, challenge, card_signature)"
                )
            return identifiers.card_serial_key(request.card_serial), b""
        except trust_status.TRUST_ERRORS as exc:
            raise trust_status.refusal(exc) from None

    def audit(self, context, caller: auth.Caller | None, method: str, request, key: bytes, response: bytes) -> None:
        """The check's access record, durable before the answer leaves (group
        commit): whom from `key` (the card serial or number key the engine
        looked up), what from the answer's bytes."""
        if self.log is None:
            return
        if caller is None:
            try:
                caller = auth.caller_of(context)
            except auth.AuthError:
                pass
        request_id = purpose = ""
        for k, v in context.invocation_metadata() or ():
            if k == REQUEST_ID_KEY and isinstance(v, str):
                request_id = v[:128]
            elif k == PURPOSE_KEY and isinstance(v, str):
                purpose = v[:128]
        if method == "CheckByCard":
            subject = card_subject(key)
            request_id = request_id or request.challenge.nonce.hex()  # empty for a bare serial
        else:
            subject = number_subject(key)
        write_records(
            self.log,
            (
                audit.AuditRecord(
                    actor=actor(caller),
                    action=method,
                    subject=subject,
                    items=describe_answer(response),
                    purpose=purpose or DEFAULT_PURPOSE.get(method, method),
                    request_id=request_id,
                ),
            ),
        )
