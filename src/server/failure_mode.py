"""TrustService: system failure mode with lookup by basic information (DOMAIN.md
§5) and the card revocation list (DOMAIN.md §8), hosted by `onshi ingest-serve`.

System failure mode is off by default; only an operator switches it, and the
switch itself is logged. While it is on, a facility may look a person up by
kana name, sex and birth date (the writer's `basic4` index, shared with the
不詳-claims work) narrowed by address and, if given, the kanji name. The answer
is what a card check would give; every use is written to the person's access
log with the EMERGENCY flag, and a refused or ambiguous lookup is logged too.

`add_to_server` here also adds AuditService and RelayService, so `onshi
ingest-serve` lists one module for the whole trust layer. LookupByBasicInfo
sends the answer's bytes as they were built (as EligibilityService does).
"""

from __future__ import annotations

import functools
import unicodedata

import grpc

from ..core import audit, cardproof, dates, history
from ..core.store import link_key
from ..core.unknown import matching
from ..v1 import trust_pb2, trust_pb2_grpc
from . import auth, handlers, trust_status
from .access_log import describe_answer, link_subject, log_async
from .eligibility_service import date_day
from .errors import FieldErrors
from .person_directory import PersonDirectory

SERVICE_NAME = trust_pb2.DESCRIPTOR.services_by_name["TrustService"].full_name
MAX_CANDIDATES = 50


def _fold(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


class TrustServicer(trust_pb2_grpc.TrustServiceServicer):
    def __init__(self, trust, directory: PersonDirectory, today=dates.today_jst):
        """`trust`: the process's trust_setup.IngestTrust (failure mode is switched on it)."""
        self.trust = trust
        self.directory = directory
        self.today = today

    async def SetSystemFailureMode(self, request, context):
        caller = auth.caller_of(context)
        reason = request.reason.strip()
        if request.enabled and not reason:
            await trust_status.abort_async(context, FieldErrors([("reason", "required when enabling")]))
        await log_async(
            self.trust.log,
            audit.AuditRecord(
                actor=caller.label,
                action="SetSystemFailureMode",
                items=f"enabled={request.enabled}",
                purpose=reason or "back to normal operation",
            ),
        )
        self.trust.failure_mode = request.enabled
        self.trust.failure_reason = reason if request.enabled else ""
        return trust_pb2.SetSystemFailureModeResponse(enabled=self.trust.failure_mode)

    async def GetSystemFailureMode(self, request, context):
        return trust_pb2.GetSystemFailureModeResponse(enabled=self.trust.failure_mode, reason=self.trust.failure_reason)

    async def LookupByBasicInfo(self, request, context) -> bytes:
        """A CheckResponse's bytes (registered without a response serializer)."""
        caller = auth.caller_of(context)
        if not self.trust.failure_mode:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "system failure mode is off: check by card or insurance-card number",
            )
        errors = FieldErrors()
        if not request.name_kana.strip():
            errors.add("name_kana", "required")
        if request.sex not in (1, 2):
            errors.add("sex", "required (SEX_MALE or SEX_FEMALE)")
        birth_day = date_day(request.birth_date, "birth_date", errors) if request.HasField("birth_date") else None
        if not request.HasField("birth_date"):
            errors.add("birth_date", "required")
        if not request.address.strip():
            errors.add("address", "required (the fourth of the basic information)")
        day = date_day(request.as_of, "as_of", errors) if request.HasField("as_of") else self.today()
        if errors.violations or birth_day is None or day is None:  # None only with a violation
            await trust_status.abort_async(context, errors)
        found = self._candidates(birth_day, request, day)
        record = functools.partial(
            audit.AuditRecord,
            actor=caller.label,
            action="LookupByBasicInfo",
            flags=audit.FLAG_EMERGENCY,
            purpose=f"system failure mode: {self.trust.failure_reason}",
        )
        if len(found) != 1:
            await log_async(self.trust.log, record(subject="basic4", items=f"candidates={len(found)}"))
            if not found:
                return history.response(history.NO_RECORD)
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{len(found)} persons match: add the kanji name or the full address, or use the self-declaration form",
            )
        link_id, value = found[0]
        _, entries = history.parse_history(value)
        validity, chosen = history.choose_by_card(entries, day)
        response = history.response(validity, [entries[i].payload for i in chosen])
        await log_async(
            self.trust.log, record(subject=link_subject(link_id), link_id=link_id, items=describe_answer(response))
        )
        return response

    def _candidates(self, birth_day: int, request, day: int) -> list[tuple[int, bytes]]:
        """Persons whose basic information in force on `day` matches; the person
        is at the desk, so their details of that day are the ones to match."""
        if self.directory.basic4 is None:
            return []
        with self.directory.env.begin() as txn:
            found = matching(
                txn,
                self.directory.basic4,
                birth_day,
                request.sex,
                request.name_kana,
                [request.address],
                "",
                day,
                day,
                limit=MAX_CANDIDATES,
            )
            out = []
            for c in found:
                value = txn.get(link_key(c.link_id), db=self.directory.history)
                if value is not None:
                    out.append((c.link_id, bytes(value)))
        if len(out) > 1 and request.name.strip():
            want = _fold(request.name)
            narrowed = []
            for link, v in out:
                person = self.directory.person_on(link, day)
                if person is not None and _fold(person.name) == want:
                    narrowed.append((link, v))
            out = narrowed or out
        return out

    async def PutRevocationList(self, request, context):
        caller = auth.caller_of(context)
        if self.trust.verifier is None or not self.trust.crl_path:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no JPKI CA / revocation list file configured")
        try:
            count = cardproof.install_revocation_list(self.trust.crl_path, request.crl, self.trust.verifier.ca_certs)
        except ValueError as exc:
            await trust_status.abort_async(context, FieldErrors([("crl", str(exc))]))
        await log_async(
            self.trust.log,
            audit.AuditRecord(
                actor=caller.label,
                action="PutRevocationList",
                items=f"revoked={count}",
                purpose="card certificate revocation list update",
            ),
        )
        return trust_pb2.PutRevocationListResponse(revoked_count=count)


def add_to_server(server, group, trust=None) -> list[str]:
    """TrustService + AuditService + RelayService, when the process has a trust
    layer (`trust`: its trust_setup.IngestTrust)."""
    from . import audit_service, relay_service

    if trust is None:
        return []
    directory = PersonDirectory(group.env, group.dbs)
    handlers.sending_bytes(
        trust_pb2_grpc.add_TrustServiceServicer_to_server,
        TrustServicer(trust, directory),
        server,
        ("LookupByBasicInfo",),
    )
    names = [SERVICE_NAME]
    names += audit_service.add_to_server(server, directory, trust)
    names += relay_service.add_to_server(server, directory, trust)
    return names
