"""RelayService.FindInsurer (DOMAIN.md §7): which other insurer covers our member?

Only an insurer may ask, and only about its own member (the request's insurer
number must be one of its certificate's). The answer names every other insurer
whose qualification covers today, each with a token (onshi.core.relay) that
only that insurer can open. Every call is written to the person's access log,
with the legal basis or consent reference as its purpose.
"""

from __future__ import annotations

import grpc

from ..core import audit, dates, identifiers
from ..v1 import relay_pb2, relay_pb2_grpc
from . import auth, trust_status
from .access_log import link_subject, log_async
from .errors import FieldErrors
from .person_directory import PersonDirectory

SERVICE_NAME = relay_pb2.DESCRIPTOR.services_by_name["RelayService"].full_name
MAX_LEGAL_BASIS = 200


def _covers(q, day: int) -> bool:
    acq = dates.to_day(dates.from_proto(q.acquisition_date))
    loss = dates.to_day(dates.from_proto(q.loss_date)) if q.HasField("loss_date") else dates.NEVER
    return acq <= day < loss


class RelayServicer(relay_pb2_grpc.RelayServiceServicer):
    def __init__(self, trust, directory: PersonDirectory, today=dates.today_jst):
        """`trust`: the process's trust_setup.IngestTrust."""
        self.trust = trust
        self.directory = directory
        self.today = today

    async def FindInsurer(self, request, context):
        caller = auth.caller_of(context)
        try:
            own = request.own_member
            errors = FieldErrors()
            legal_basis = request.legal_basis.strip()
            if not legal_basis:
                errors.add("legal_basis", "required: the legal basis or the person's consent reference")
            elif len(legal_basis) > MAX_LEGAL_BASIS:
                errors.add("legal_basis", f"at most {MAX_LEGAL_BASIS} characters")
            try:
                key = identifiers.number_key(own.insurer_number, own.symbol, own.number, own.branch)
            except identifiers.InvalidIdentifier as exc:
                errors.add("own_member." + exc.field, exc.description)
                key = None
            if errors.violations:
                raise errors
            mine = auth.caller_insurers(caller, context)
            insurer = identifiers.normalize_insurer_number(own.insurer_number)
            if insurer not in mine:
                raise auth.denied(f"insurer number {insurer} is not the caller's")
            if self.trust.sealer is None:
                raise auth.AuthError(grpc.StatusCode.FAILED_PRECONDITION, "the relay has no signing key configured")
        except (FieldErrors, auth.AuthError, identifiers.InvalidIdentifier) as exc:
            await trust_status.abort_async(context, exc)
        link_id = self.directory.link_of_number(key)
        if link_id is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such member of your insurer")
        quals = [q for _, q in self.directory.qualifications(link_id)]
        day = self.today()
        matches = []
        skipped = []
        for q in quals:
            if q.insurer_number in mine or not _covers(q, day):
                continue
            member = relay_pb2.MemberNumber(
                insurer_number=q.insurer_number, symbol=q.symbol, number=q.number, branch=q.branch
            )
            if not self.trust.sealer.can_seal_for(q.insurer_number):
                skipped.append(q.insurer_number)  # no key: cannot answer without revealing the number
                continue
            token = self.trust.sealer.seal(member, insurer, legal_basis)
            matches.append(relay_pb2.InsurerMatch(insurer_number=q.insurer_number, token=token))
        items = "insurers=" + ",".join(m.insurer_number for m in matches)
        if skipped:
            items += " no-key=" + ",".join(skipped)
        await log_async(
            self.trust.log,
            audit.AuditRecord(
                actor=caller.label,
                action="RelayFindInsurer",
                subject=link_subject(link_id),
                link_id=link_id,
                items=items,
                purpose=legal_basis,
                flags=audit.FLAG_RELAY,
            ),
        )
        return relay_pb2.FindInsurerResponse(matches=matches)


def add_to_server(server, directory: PersonDirectory, trust) -> list[str]:
    relay_pb2_grpc.add_RelayServiceServicer_to_server(RelayServicer(trust, directory), server)
    return [SERVICE_NAME]
