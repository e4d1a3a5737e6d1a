"""AuditService.ListMyAccess: a person reads who looked at their data.

The person proves the card as for a check (card certificate, challenge bound
to the terminal's facility code, signature after PIN entry), signed for this
purpose (cardproof.PURPOSE_LIST_MY_ACCESS, so a proof made for a check is
refused here, and the other way); the answer
holds only records about the person that card is linked to — by link ID, or by
the digests of the card serial and insured numbers the person holds now (see
PersonDirectory.subjects). The reading itself is logged (flag SELF) and
left out of the listing.
"""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import timestamp_pb2

from ..core import audit, cardproof
from ..core.cardproof import CardProofError, MalformedProof
from ..v1 import audit_pb2, audit_pb2_grpc
from . import auth, trust_status
from .access_log import card_subject, log_async
from .eligibility_service import timestamp_ns
from .errors import FieldErrors
from .person_directory import PersonDirectory

SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
DEFAULT_PAGE = 100
MAX_PAGE = 1000
ROLE_OF = {
    "facility": audit_pb2.ACCESSOR_ROLE_FACILITY,
    "insurer": audit_pb2.ACCESSOR_ROLE_INSURER,
    "review": audit_pb2.ACCESSOR_ROLE_REVIEW_BODY,
    "operator": audit_pb2.ACCESSOR_ROLE_OPERATOR,
}


def access_record(rec: audit.AuditRecord) -> audit_pb2.AccessRecord:
    role, _, codes = rec.actor.partition(":")
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(rec.time_ns)
    return audit_pb2.AccessRecord(
        time=ts,
        accessor_role=audit_pb2.ACCESSOR_ROLE_RELAY
        if rec.flags & audit.FLAG_RELAY and role == "insurer"
        else ROLE_OF.get(role, audit_pb2.ACCESSOR_ROLE_UNSPECIFIED),
        accessor_codes=[c for c in codes.split(",") if c],
        action=rec.action,
        items=rec.items,
        purpose=rec.purpose,
        emergency=rec.emergency,
    )


def my_records(audit_dir: str, link_id: int, subjects: set[str], since_ns: int = 0) -> list[audit.AuditRecord]:
    """This person's records, newest first, without their own readings."""
    keys = set(subjects) | {f"link:{link_id}"}
    found = [r for r in audit.read_about(audit_dir, keys) if not r.flags & audit.FLAG_SELF and r.time_ns >= since_ns]
    found.sort(key=lambda r: r.time_ns, reverse=True)
    return found


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, trust, directory: PersonDirectory):
        """`trust`: the process's trust_setup.IngestTrust."""
        self.trust = trust
        self.directory = directory

    async def ListMyAccess(
        self, request: audit_pb2.ListMyAccessRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.ListMyAccessResponse:
        # Checked before the proof: a bad field must not spend the card's nonce.
        errors = FieldErrors()
        page = request.page_size or DEFAULT_PAGE
        if not 0 < page <= MAX_PAGE:
            errors.add("page_size", f"must be 1-{MAX_PAGE}")
        since = timestamp_ns(request.since, "since", errors) if request.HasField("since") else 0
        try:
            caller = auth.caller_of(context)
            if errors.violations:
                raise errors
            if self.trust.verifier is None:
                raise auth.AuthError(grpc.StatusCode.FAILED_PRECONDITION, "card proof is not configured")
            proof = self.trust.verifier.verify_request(
                request, caller.facility_code, purpose=cardproof.PURPOSE_LIST_MY_ACCESS
            )
        except (CardProofError, MalformedProof, auth.AuthError, FieldErrors) as exc:
            await trust_status.abort_async(context, exc)
        link_id = self.directory.link_of_card(proof.serial_key)
        records: list[audit.AuditRecord] = []
        if link_id is not None and self.trust.audit_dir:
            # Reading every stream's segments takes a while: off the event loop.
            records = await asyncio.get_running_loop().run_in_executor(
                None, my_records, self.trust.audit_dir, link_id, self.directory.subjects(link_id), since or 0
            )
        await log_async(
            self.trust.log,
            audit.AuditRecord(
                actor=caller.label,
                action="ListMyAccess",
                subject=card_subject(proof.serial_key),
                link_id=link_id or 0,
                items=f"records={min(len(records), page)}",
                purpose="the person reads their log",
                request_id=proof.nonce.hex(),
                flags=audit.FLAG_SELF,
            ),
        )
        return audit_pb2.ListMyAccessResponse(
            records=[access_record(r) for r in records[:page]], truncated=len(records) > page
        )


def add_to_server(server, directory: PersonDirectory, trust) -> list[str]:
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(trust, directory), server)
    return [SERVICE_NAME]
