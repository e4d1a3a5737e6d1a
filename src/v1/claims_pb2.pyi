from google.type import date_pb2 as _date_pb2
from onshi.v1 import qualification_pb2 as _qualification_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClaimKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLAIM_KIND_UNSPECIFIED: _ClassVar[ClaimKind]
    CLAIM_KIND_MEDICAL: _ClassVar[ClaimKind]
    CLAIM_KIND_DENTAL: _ClassVar[ClaimKind]
    CLAIM_KIND_PHARMACY: _ClassVar[ClaimKind]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_OK: _ClassVar[Outcome]
    OUTCOME_REROUTE: _ClassVar[Outcome]
    OUTCOME_SPLIT: _ClassVar[Outcome]
    OUTCOME_RESOLVED_UNKNOWN: _ClassVar[Outcome]
    OUTCOME_UNRESOLVED: _ClassVar[Outcome]
    OUTCOME_RETURN: _ClassVar[Outcome]

class ReturnReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETURN_REASON_UNSPECIFIED: _ClassVar[ReturnReason]
    RETURN_REASON_NUMBER_NOT_FOUND: _ClassVar[ReturnReason]
    RETURN_REASON_BIRTH_DATE_MISMATCH: _ClassVar[ReturnReason]
    RETURN_REASON_NO_QUALIFICATION: _ClassVar[ReturnReason]
    RETURN_REASON_INVALID_NUMBER: _ClassVar[ReturnReason]
    RETURN_REASON_PUBLIC_EXPENSE: _ClassVar[ReturnReason]
    RETURN_REASON_HIGH_COST: _ClassVar[ReturnReason]

class CertificateFlag(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CERTIFICATE_FLAG_UNSPECIFIED: _ClassVar[CertificateFlag]
    CERTIFICATE_FLAG_LIMIT_AMOUNT: _ClassVar[CertificateFlag]
    CERTIFICATE_FLAG_ELDERLY_RATIO: _ClassVar[CertificateFlag]
    CERTIFICATE_FLAG_SPECIFIC_DISEASE: _ClassVar[CertificateFlag]
    CERTIFICATE_FLAG_BURDEN_RATIO: _ClassVar[CertificateFlag]
CLAIM_KIND_UNSPECIFIED: ClaimKind
CLAIM_KIND_MEDICAL: ClaimKind
CLAIM_KIND_DENTAL: ClaimKind
CLAIM_KIND_PHARMACY: ClaimKind
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_OK: Outcome
OUTCOME_REROUTE: Outcome
OUTCOME_SPLIT: Outcome
OUTCOME_RESOLVED_UNKNOWN: Outcome
OUTCOME_UNRESOLVED: Outcome
OUTCOME_RETURN: Outcome
RETURN_REASON_UNSPECIFIED: ReturnReason
RETURN_REASON_NUMBER_NOT_FOUND: ReturnReason
RETURN_REASON_BIRTH_DATE_MISMATCH: ReturnReason
RETURN_REASON_NO_QUALIFICATION: ReturnReason
RETURN_REASON_INVALID_NUMBER: ReturnReason
RETURN_REASON_PUBLIC_EXPENSE: ReturnReason
RETURN_REASON_HIGH_COST: ReturnReason
CERTIFICATE_FLAG_UNSPECIFIED: CertificateFlag
CERTIFICATE_FLAG_LIMIT_AMOUNT: CertificateFlag
CERTIFICATE_FLAG_ELDERLY_RATIO: CertificateFlag
CERTIFICATE_FLAG_SPECIFIC_DISEASE: CertificateFlag
CERTIFICATE_FLAG_BURDEN_RATIO: CertificateFlag

class VerifyClaimsRequest(_message.Message):
    __slots__ = ("claims",)
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    claims: _containers.RepeatedCompositeFieldContainer[Claim]
    def __init__(self, claims: _Optional[_Iterable[_Union[Claim, _Mapping]]] = ...) -> None: ...

class VerifyClaimsResponse(_message.Message):
    __slots__ = ("verdicts",)
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[Verdict]
    def __init__(self, verdicts: _Optional[_Iterable[_Union[Verdict, _Mapping]]] = ...) -> None: ...

class Claim(_message.Message):
    __slots__ = ("claim_id", "facility_code", "insurer_number", "symbol", "number", "branch", "birth_date", "first_visit_date", "last_visit_date", "visit_days", "kind", "public_expense_numbers", "high_cost", "points", "declaration")
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    FACILITY_CODE_FIELD_NUMBER: _ClassVar[int]
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    FIRST_VISIT_DATE_FIELD_NUMBER: _ClassVar[int]
    LAST_VISIT_DATE_FIELD_NUMBER: _ClassVar[int]
    VISIT_DAYS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_EXPENSE_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    HIGH_COST_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    DECLARATION_FIELD_NUMBER: _ClassVar[int]
    claim_id: str
    facility_code: str
    insurer_number: str
    symbol: str
    number: str
    branch: str
    birth_date: _date_pb2.Date
    first_visit_date: _date_pb2.Date
    last_visit_date: _date_pb2.Date
    visit_days: _containers.RepeatedScalarFieldContainer[int]
    kind: ClaimKind
    public_expense_numbers: _containers.RepeatedScalarFieldContainer[str]
    high_cost: bool
    points: int
    declaration: SelfDeclaration
    def __init__(self, claim_id: _Optional[str] = ..., facility_code: _Optional[str] = ..., insurer_number: _Optional[str] = ..., symbol: _Optional[str] = ..., number: _Optional[str] = ..., branch: _Optional[str] = ..., birth_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., first_visit_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., last_visit_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., visit_days: _Optional[_Iterable[int]] = ..., kind: _Optional[_Union[ClaimKind, str]] = ..., public_expense_numbers: _Optional[_Iterable[str]] = ..., high_cost: _Optional[bool] = ..., points: _Optional[int] = ..., declaration: _Optional[_Union[SelfDeclaration, _Mapping]] = ...) -> None: ...

class SelfDeclaration(_message.Message):
    __slots__ = ("name", "name_kana", "sex", "address", "postcode", "employer", "insurer_name", "insurer_number", "other_addresses")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    POSTCODE_FIELD_NUMBER: _ClassVar[int]
    EMPLOYER_FIELD_NUMBER: _ClassVar[int]
    INSURER_NAME_FIELD_NUMBER: _ClassVar[int]
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    OTHER_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    name: str
    name_kana: str
    sex: _qualification_pb2.Sex
    address: str
    postcode: str
    employer: str
    insurer_name: str
    insurer_number: str
    other_addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., name_kana: _Optional[str] = ..., sex: _Optional[_Union[_qualification_pb2.Sex, str]] = ..., address: _Optional[str] = ..., postcode: _Optional[str] = ..., employer: _Optional[str] = ..., insurer_name: _Optional[str] = ..., insurer_number: _Optional[str] = ..., other_addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("first_day", "last_day", "insurer_number", "insurer_name", "symbol", "number", "branch", "points")
    FIRST_DAY_FIELD_NUMBER: _ClassVar[int]
    LAST_DAY_FIELD_NUMBER: _ClassVar[int]
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    INSURER_NAME_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    first_day: _date_pb2.Date
    last_day: _date_pb2.Date
    insurer_number: str
    insurer_name: str
    symbol: str
    number: str
    branch: str
    points: int
    def __init__(self, first_day: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., last_day: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., insurer_number: _Optional[str] = ..., insurer_name: _Optional[str] = ..., symbol: _Optional[str] = ..., number: _Optional[str] = ..., branch: _Optional[str] = ..., points: _Optional[int] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("claim_id", "outcome", "segments", "return_reason", "detail", "flags")
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    claim_id: str
    outcome: Outcome
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    return_reason: ReturnReason
    detail: str
    flags: _containers.RepeatedScalarFieldContainer[CertificateFlag]
    def __init__(self, claim_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., return_reason: _Optional[_Union[ReturnReason, str]] = ..., detail: _Optional[str] = ..., flags: _Optional[_Iterable[_Union[CertificateFlag, str]]] = ...) -> None: ...

class ApportionRequest(_message.Message):
    __slots__ = ("facility_code", "first_month", "last_month")
    FACILITY_CODE_FIELD_NUMBER: _ClassVar[int]
    FIRST_MONTH_FIELD_NUMBER: _ClassVar[int]
    LAST_MONTH_FIELD_NUMBER: _ClassVar[int]
    facility_code: str
    first_month: _date_pb2.Date
    last_month: _date_pb2.Date
    def __init__(self, facility_code: _Optional[str] = ..., first_month: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., last_month: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...

class InsurerShare(_message.Message):
    __slots__ = ("insurer_number", "paid_points", "share_points")
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PAID_POINTS_FIELD_NUMBER: _ClassVar[int]
    SHARE_POINTS_FIELD_NUMBER: _ClassVar[int]
    insurer_number: str
    paid_points: int
    share_points: int
    def __init__(self, insurer_number: _Optional[str] = ..., paid_points: _Optional[int] = ..., share_points: _Optional[int] = ...) -> None: ...

class ApportionResponse(_message.Message):
    __slots__ = ("unresolved_points", "unresolved_claims", "paid_points", "shares")
    UNRESOLVED_POINTS_FIELD_NUMBER: _ClassVar[int]
    UNRESOLVED_CLAIMS_FIELD_NUMBER: _ClassVar[int]
    PAID_POINTS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    unresolved_points: int
    unresolved_claims: int
    paid_points: int
    shares: _containers.RepeatedCompositeFieldContainer[InsurerShare]
    def __init__(self, unresolved_points: _Optional[int] = ..., unresolved_claims: _Optional[int] = ..., paid_points: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[InsurerShare, _Mapping]]] = ...) -> None: ...
