import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from onshi.v1 import eligibility_pb2 as _eligibility_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccessorRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESSOR_ROLE_UNSPECIFIED: _ClassVar[AccessorRole]
    ACCESSOR_ROLE_FACILITY: _ClassVar[AccessorRole]
    ACCESSOR_ROLE_INSURER: _ClassVar[AccessorRole]
    ACCESSOR_ROLE_REVIEW_BODY: _ClassVar[AccessorRole]
    ACCESSOR_ROLE_OPERATOR: _ClassVar[AccessorRole]
    ACCESSOR_ROLE_RELAY: _ClassVar[AccessorRole]
ACCESSOR_ROLE_UNSPECIFIED: AccessorRole
ACCESSOR_ROLE_FACILITY: AccessorRole
ACCESSOR_ROLE_INSURER: AccessorRole
ACCESSOR_ROLE_REVIEW_BODY: AccessorRole
ACCESSOR_ROLE_OPERATOR: AccessorRole
ACCESSOR_ROLE_RELAY: AccessorRole

class ListMyAccessRequest(_message.Message):
    __slots__ = ("card_certificate", "challenge", "card_signature", "since", "page_size")
    CARD_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    CARD_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    card_certificate: bytes
    challenge: _eligibility_pb2.CardChallenge
    card_signature: bytes
    since: _timestamp_pb2.Timestamp
    page_size: int
    def __init__(self, card_certificate: _Optional[bytes] = ..., challenge: _Optional[_Union[_eligibility_pb2.CardChallenge, _Mapping]] = ..., card_signature: _Optional[bytes] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListMyAccessResponse(_message.Message):
    __slots__ = ("records", "truncated")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AccessRecord]
    truncated: bool
    def __init__(self, records: _Optional[_Iterable[_Union[AccessRecord, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class AccessRecord(_message.Message):
    __slots__ = ("time", "accessor_role", "accessor_codes", "action", "items", "purpose", "emergency")
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACCESSOR_ROLE_FIELD_NUMBER: _ClassVar[int]
    ACCESSOR_CODES_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EMERGENCY_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    accessor_role: AccessorRole
    accessor_codes: _containers.RepeatedScalarFieldContainer[str]
    action: str
    items: str
    purpose: str
    emergency: bool
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., accessor_role: _Optional[_Union[AccessorRole, str]] = ..., accessor_codes: _Optional[_Iterable[str]] = ..., action: _Optional[str] = ..., items: _Optional[str] = ..., purpose: _Optional[str] = ..., emergency: _Optional[bool] = ...) -> None: ...
