"""A small EligibilityService client (used by `onshi check` and the tests)."""

from __future__ import annotations

import datetime as dt

import grpc

from onshi.core import dates
from onshi.v1 import eligibility_pb2, eligibility_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"


class EligibilityClient:
    def __init__(self, target: str = DEFAULT_TARGET, *, credentials: grpc.ChannelCredentials | None = None,
                 timeout: float = 5.0):
        self.channel = (grpc.secure_channel(target, credentials) if credentials
                        else grpc.insecure_channel(target))
        self.stub = eligibility_pb2_grpc.EligibilityServiceStub(self.channel)
        self.timeout = timeout

    def __enter__(self) -> "EligibilityClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def check_by_card(self, card_serial: str, as_of: dt.date | None = None) -> eligibility_pb2.CheckResponse:
        request = eligibility_pb2.CheckByCardRequest(card_serial=card_serial, as_of=dates.to_proto(as_of))
        return self.stub.CheckByCard(request, timeout=self.timeout)

    def check_by_number(self, insurer_number: str, symbol: str, number: str, branch: str,
                        birth_date: dt.date | None, as_of: dt.date | None = None) -> eligibility_pb2.CheckResponse:
        request = eligibility_pb2.CheckByNumberRequest(
            insurer_number=insurer_number, symbol=symbol, number=number, branch=branch,
            birth_date=dates.to_proto(birth_date), as_of=dates.to_proto(as_of))
        return self.stub.CheckByNumber(request, timeout=self.timeout)
