"""TrustService: system failure mode with lookup by basic information (DOMAIN.md
§5) and the card revocation list (DOMAIN.md §8), hosted by `onshi ingest-serve`.

System failure mode is off by default; only an operator switches it, and the
switch itself is logged. While it is on, a facility may look a person up by
kana name, sex and birth date (the writer's `basic4` index, shared with the
不詳-claims work) narrowed by address and, if given, the kanji name. The answer
is what a card check would give; every use is written to the person's access
log with the EMERGENCY flag, and a refused or ambiguous lookup is logged too.

`add_to_server` here also adds AuditService and RelayService, so `onshi
ingest-serve` lists one module for the whole trust layer.
"""

from __future__ import annotations

import unicodedata

import grpc
from onshi.core import audit, cardproof, dates, history
from onshi.core.store import link_key
from onshi.core.unknown import matching
from onshi.server import auth, trust
from onshi.server.eligibility import date_day
from onshi.server.errors import FieldErrors
from onshi.v1 import eligibility_pb2, trust_pb2, trust_pb2_grpc

SERVICE_NAME = trust_pb2.DESCRIPTOR.services_by_name["TrustService"].full_name
MAX_CANDIDATES = 50


def _fold(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


def _raw(response: bytes) -> eligibility_pb2.CheckResponse:
    return eligibility_pb2.CheckResponse.FromString(response)


class TrustServicer(trust_pb2_grpc.TrustServiceServicer):
    def __init__(self, ctx: trust.TrustContext, directory: trust.PersonDirectory, today=dates.today_jst):
        self.ctx = ctx
        self.directory = directory
        self.today = today

    async def SetSystemFailureMode(self, request, context):
        caller = auth.caller_of(context)
        reason = request.reason.strip()
        if request.enabled and not reason:
            await trust.abort_trust_async(context, FieldErrors([("reason", "required when enabling")]))
        await trust.log_async(self.ctx.log, audit.AuditRecord(
            actor=caller.label, action="SetSystemFailureMode", items=f"enabled={request.enabled}",
            purpose=reason or "back to normal operation"))
        self.ctx.failure_mode = request.enabled
        self.ctx.failure_reason = reason if request.enabled else ""
        return trust_pb2.SetSystemFailureModeResponse(enabled=self.ctx.failure_mode)

    async def GetSystemFailureMode(self, request, context):
        return trust_pb2.GetSystemFailureModeResponse(enabled=self.ctx.failure_mode,
                                                      reason=self.ctx.failure_reason)

    async def LookupByBasicInfo(self, request, context):
        caller = auth.caller_of(context)
        if not self.ctx.failure_mode:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                 "system failure mode is off: check by card or insurance-card number")
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
        if errors.violations:
            await trust.abort_trust_async(context, errors)
        found = self._candidates(birth_day, request, day)
        record = dict(actor=caller.label, action="LookupByBasicInfo", flags=audit.FLAG_EMERGENCY,
                      purpose=f"system failure mode: {self.ctx.failure_reason}")
        if len(found) != 1:
            await trust.log_async(self.ctx.log, audit.AuditRecord(
                subject="basic4", items=f"candidates={len(found)}", **record))
            if not found:
                return _raw(history.response(history.NO_RECORD))
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                 f"{len(found)} persons match: add the kanji name or the full address, "
                                 "or use the self-declaration form")
        link_id, value = found[0]
        _, entries = history.parse_history(value)
        validity, chosen = history.choose_by_card(entries, day)
        response = history.response(validity, [entries[i].payload for i in chosen])
        await trust.log_async(self.ctx.log, audit.AuditRecord(
            subject=trust.link_subject(link_id), link_id=link_id,
            items=trust.describe_response(response), **record))
        return _raw(response)

    def _candidates(self, birth_day: int, request, day: int) -> list[tuple[int, bytes]]:
        """Persons whose basic information in force on `day` matches; the person
        is at the desk, so their details of that day are the ones to match."""
        if self.directory.basic4 is None:
            return []
        with self.directory.env.begin() as txn:
            found = matching(txn, self.directory.basic4, birth_day, request.sex, request.name_kana,
                             [request.address], "", day, day, limit=MAX_CANDIDATES)
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
        if self.ctx.verifier is None or not self.ctx.crl_path:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no JPKI CA / revocation list file configured")
        try:
            count = cardproof.install_revocation_list(self.ctx.crl_path, request.crl, self.ctx.verifier.ca_certs)
        except ValueError as exc:
            await trust.abort_trust_async(context, FieldErrors([("crl", str(exc))]))
        await trust.log_async(self.ctx.log, audit.AuditRecord(
            actor=caller.label, action="PutRevocationList", items=f"revoked={count}",
            purpose="card certificate revocation list update"))
        return trust_pb2.PutRevocationListResponse(revoked_count=count)


def add_to_server(server, group) -> list[str]:
    """TrustService + AuditService + RelayService, when trust.configure() was called."""
    from onshi.server import audit_service, relay_service

    ctx = trust.configured()
    if ctx is None:
        return []
    directory = trust.PersonDirectory(group.env, group.dbs)
    trust_pb2_grpc.add_TrustServiceServicer_to_server(TrustServicer(ctx, directory), server)
    names = [SERVICE_NAME]
    names += audit_service.add_to_server(server, group)
    names += relay_service.add_to_server(server, group)
    return names
