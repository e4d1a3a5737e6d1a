"""A small EligibilityService client (used by `onshi check` and the tests)."""

from __future__ import annotations

import datetime as dt

import grpc
from google.type import date_pb2
from onshi.core import dates
from onshi.v1 import eligibility_pb2, eligibility_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
DateLike = dt.date | date_pb2.Date | None


def _date(d: DateLike) -> date_pb2.Date | None:
    # A google.type.Date passes as is, so a caller can send what a user typed
    # (even 2023-02-29) and let the server name the field at fault.
    return d if d is None or isinstance(d, date_pb2.Date) else dates.to_proto(d)


class EligibilityClient:
    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 5.0,
    ):
        self.channel = (
            grpc.secure_channel(target, credentials)
            if credentials
            else grpc.insecure_channel(target)
        )
        self.stub = eligibility_pb2_grpc.EligibilityServiceStub(self.channel)
        self.timeout = timeout

    def __enter__(self) -> "EligibilityClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def check_by_card(
        self, card_serial: str, as_of: DateLike = None
    ) -> eligibility_pb2.CheckResponse:
        request = eligibility_pb2.CheckByCardRequest(card_serial=card_serial, as_of=_date(as_of))
        return self.stub.CheckByCard(request, timeout=self.timeout)

    def check_by_number(
        self,
        insurer_number: str,
        symbol: str,
        number: str,
        branch: str,
        birth_date: DateLike,
        as_of: DateLike = None,
    ) -> eligibility_pb2.CheckResponse:
        request = eligibility_pb2.CheckByNumberRequest(
            insurer_number=insurer_number,
            symbol=symbol,
            number=number,
            branch=branch,
            birth_date=_date(birth_date),
            as_of=_date(as_of),
        )
        return self.stub.CheckByNumber(request, timeout=self.timeout)
