from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MemberNumber(_message.Message):
    __slots__ = ("insurer_number", "symbol", "number", "branch")
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    insurer_number: str
    symbol: str
    number: str
    branch: str
    def __init__(self, insurer_number: _Optional[str] = ..., symbol: _Optional[str] = ..., number: _Optional[str] = ..., branch: _Optional[str] = ...) -> None: ...

class FindInsurerRequest(_message.Message):
    __slots__ = ("own_member", "legal_basis")
    OWN_MEMBER_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    own_member: MemberNumber
    legal_basis: str
    def __init__(self, own_member: _Optional[_Union[MemberNumber, _Mapping]] = ..., legal_basis: _Optional[str] = ...) -> None: ...

class FindInsurerResponse(_message.Message):
    __slots__ = ("matches",)
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[InsurerMatch]
    def __init__(self, matches: _Optional[_Iterable[_Union[InsurerMatch, _Mapping]]] = ...) -> None: ...

class InsurerMatch(_message.Message):
    __slots__ = ("insurer_number", "token")
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    insurer_number: str
    token: bytes
    def __init__(self, insurer_number: _Optional[str] = ..., token: _Optional[bytes] = ...) -> None: ...

class RelayTokenPayload(_message.Message):
    __slots__ = ("recipient_insurer_number", "requester_insurer_number", "sealed_member", "issued_unix", "expires_unix", "token_id", "legal_basis")
    RECIPIENT_INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SEALED_MEMBER_FIELD_NUMBER: _ClassVar[int]
    ISSUED_UNIX_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    recipient_insurer_number: str
    requester_insurer_number: str
    sealed_member: bytes
    issued_unix: int
    expires_unix: int
    token_id: bytes
    legal_basis: str
    def __init__(self, recipient_insurer_number: _Optional[str] = ..., requester_insurer_number: _Optional[str] = ..., sealed_member: _Optional[bytes] = ..., issued_unix: _Optional[int] = ..., expires_unix: _Optional[int] = ..., token_id: _Optional[bytes] = ..., legal_basis: _Optional[str] = ...) -> None: ...

class SealedMember(_message.Message):
    __slots__ = ("member", "token_id", "recipient_insurer_number")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    member: MemberNumber
    token_id: bytes
    recipient_insurer_number: str
    def __init__(self, member: _Optional[_Union[MemberNumber, _Mapping]] = ..., token_id: _Optional[bytes] = ..., recipient_insurer_number: _Optional[str] = ...) -> None: ...

class RelayToken(_message.Message):
    __slots__ = ("payload", "signature")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    signature: bytes
    def __init__(self, payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
