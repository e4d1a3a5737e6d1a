from google.type import date_pb2 as _date_pb2
from onshi.v1 import qualification_pb2 as _qualification_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Validity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALIDITY_UNSPECIFIED: _ClassVar[Validity]
    VALIDITY_VALID: _ClassVar[Validity]
    VALIDITY_INVALID: _ClassVar[Validity]
    VALIDITY_INVALID_NEWER_EXISTS: _ClassVar[Validity]
    VALIDITY_NO_RECORD: _ClassVar[Validity]
    VALIDITY_MULTIPLE: _ClassVar[Validity]

class WarningCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WARNING_CODE_UNSPECIFIED: _ClassVar[WarningCode]
    WARNING_CODE_CARD_CERTIFICATE_EXPIRING: _ClassVar[WarningCode]
    WARNING_CODE_CARD_CERTIFICATE_EXPIRED: _ClassVar[WarningCode]
    WARNING_CODE_CARD_CERTIFICATE_REVOKED: _ClassVar[WarningCode]
VALIDITY_UNSPECIFIED: Validity
VALIDITY_VALID: Validity
VALIDITY_INVALID: Validity
VALIDITY_INVALID_NEWER_EXISTS: Validity
VALIDITY_NO_RECORD: Validity
VALIDITY_MULTIPLE: Validity
WARNING_CODE_UNSPECIFIED: WarningCode
WARNING_CODE_CARD_CERTIFICATE_EXPIRING: WarningCode
WARNING_CODE_CARD_CERTIFICATE_EXPIRED: WarningCode
WARNING_CODE_CARD_CERTIFICATE_REVOKED: WarningCode

class CheckByCardRequest(_message.Message):
    __slots__ = ("card_serial", "as_of", "card_certificate", "challenge", "card_signature")
    CARD_SERIAL_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    CARD_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    CARD_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    card_serial: str
    as_of: _date_pb2.Date
    card_certificate: bytes
    challenge: CardChallenge
    card_signature: bytes
    def __init__(self, card_serial: _Optional[str] = ..., as_of: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., card_certificate: _Optional[bytes] = ..., challenge: _Optional[_Union[CardChallenge, _Mapping]] = ..., card_signature: _Optional[bytes] = ...) -> None: ...

class CardChallenge(_message.Message):
    __slots__ = ("facility_code", "timestamp_unix", "nonce")
    FACILITY_CODE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_UNIX_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    facility_code: str
    timestamp_unix: int
    nonce: bytes
    def __init__(self, facility_code: _Optional[str] = ..., timestamp_unix: _Optional[int] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class CheckByNumberRequest(_message.Message):
    __slots__ = ("insurer_number", "symbol", "number", "branch", "birth_date", "as_of")
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    insurer_number: str
    symbol: str
    number: str
    branch: str
    birth_date: _date_pb2.Date
    as_of: _date_pb2.Date
    def __init__(self, insurer_number: _Optional[str] = ..., symbol: _Optional[str] = ..., number: _Optional[str] = ..., branch: _Optional[str] = ..., birth_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., as_of: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...

class Warning(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: WarningCode
    message: str
    def __init__(self, code: _Optional[_Union[WarningCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("validity", "qualifications", "warnings")
    VALIDITY_FIELD_NUMBER: _ClassVar[int]
    QUALIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    validity: Validity
    qualifications: _containers.RepeatedCompositeFieldContainer[_qualification_pb2.Qualification]
    warnings: _containers.RepeatedCompositeFieldContainer[Warning]
    def __init__(self, validity: _Optional[_Union[Validity, str]] = ..., qualifications: _Optional[_Iterable[_Union[_qualification_pb2.Qualification, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[Warning, _Mapping]]] = ...) -> None: ...
