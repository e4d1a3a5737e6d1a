from google.type import date_pb2 as _date_pb2
from onshi.v1 import eligibility_pb2 as _eligibility_pb2
from onshi.v1 import qualification_pb2 as _qualification_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SetSystemFailureModeRequest(_message.Message):
    __slots__ = ("enabled", "reason")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    reason: str
    def __init__(self, enabled: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class SetSystemFailureModeResponse(_message.Message):
    __slots__ = ("enabled",)
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    def __init__(self, enabled: _Optional[bool] = ...) -> None: ...

class GetSystemFailureModeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSystemFailureModeResponse(_message.Message):
    __slots__ = ("enabled", "reason")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    reason: str
    def __init__(self, enabled: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class LookupByBasicInfoRequest(_message.Message):
    __slots__ = ("name_kana", "sex", "birth_date", "address", "as_of", "name")
    NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    name_kana: str
    sex: _qualification_pb2.Sex
    birth_date: _date_pb2.Date
    address: str
    as_of: _date_pb2.Date
    name: str
    def __init__(self, name_kana: _Optional[str] = ..., sex: _Optional[_Union[_qualification_pb2.Sex, str]] = ..., birth_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., address: _Optional[str] = ..., as_of: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class PutRevocationListRequest(_message.Message):
    __slots__ = ("crl",)
    CRL_FIELD_NUMBER: _ClassVar[int]
    crl: bytes
    def __init__(self, crl: _Optional[bytes] = ...) -> None: ...

class PutRevocationListResponse(_message.Message):
    __slots__ = ("revoked_count",)
    REVOKED_COUNT_FIELD_NUMBER: _ClassVar[int]
    revoked_count: int
    def __init__(self, revoked_count: _Optional[int] = ...) -> None: ...
