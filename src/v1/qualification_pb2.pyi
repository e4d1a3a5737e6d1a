from google.type import date_pb2 as _date_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Sex(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEX_UNSPECIFIED: _ClassVar[Sex]
    SEX_MALE: _ClassVar[Sex]
    SEX_FEMALE: _ClassVar[Sex]

class Relationship(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RELATIONSHIP_UNSPECIFIED: _ClassVar[Relationship]
    RELATIONSHIP_INSURED: _ClassVar[Relationship]
    RELATIONSHIP_DEPENDENT: _ClassVar[Relationship]

class LossReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOSS_REASON_UNSPECIFIED: _ClassVar[LossReason]
    LOSS_REASON_DEATH: _ClassVar[LossReason]
    LOSS_REASON_PUBLIC_ASSISTANCE: _ClassVar[LossReason]
    LOSS_REASON_OTHER_INSURANCE: _ClassVar[LossReason]
    LOSS_REASON_OTHER: _ClassVar[LossReason]

class CardKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CARD_KIND_UNSPECIFIED: _ClassVar[CardKind]
    CARD_KIND_EMPLOYEE: _ClassVar[CardKind]
    CARD_KIND_SEAMEN: _ClassVar[CardKind]
    CARD_KIND_NATIONAL_HEALTH: _ClassVar[CardKind]
    CARD_KIND_LATE_ELDERLY: _ClassVar[CardKind]
    CARD_KIND_RETIREE: _ClassVar[CardKind]
    CARD_KIND_SHORT_TERM: _ClassVar[CardKind]
    CARD_KIND_STUDENT_SPECIAL: _ClassVar[CardKind]
    CARD_KIND_RESIDENCE_SPECIAL: _ClassVar[CardKind]
    CARD_KIND_DAY_LABOURER: _ClassVar[CardKind]
    CARD_KIND_ELIGIBILITY_CERTIFICATE: _ClassVar[CardKind]

class SpecificDisease(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPECIFIC_DISEASE_UNSPECIFIED: _ClassVar[SpecificDisease]
    SPECIFIC_DISEASE_DIALYSIS: _ClassVar[SpecificDisease]
    SPECIFIC_DISEASE_HEMOPHILIA: _ClassVar[SpecificDisease]
    SPECIFIC_DISEASE_HIV: _ClassVar[SpecificDisease]
SEX_UNSPECIFIED: Sex
SEX_MALE: Sex
SEX_FEMALE: Sex
RELATIONSHIP_UNSPECIFIED: Relationship
RELATIONSHIP_INSURED: Relationship
RELATIONSHIP_DEPENDENT: Relationship
LOSS_REASON_UNSPECIFIED: LossReason
LOSS_REASON_DEATH: LossReason
LOSS_REASON_PUBLIC_ASSISTANCE: LossReason
LOSS_REASON_OTHER_INSURANCE: LossReason
LOSS_REASON_OTHER: LossReason
CARD_KIND_UNSPECIFIED: CardKind
CARD_KIND_EMPLOYEE: CardKind
CARD_KIND_SEAMEN: CardKind
CARD_KIND_NATIONAL_HEALTH: CardKind
CARD_KIND_LATE_ELDERLY: CardKind
CARD_KIND_RETIREE: CardKind
CARD_KIND_SHORT_TERM: CardKind
CARD_KIND_STUDENT_SPECIAL: CardKind
CARD_KIND_RESIDENCE_SPECIAL: CardKind
CARD_KIND_DAY_LABOURER: CardKind
CARD_KIND_ELIGIBILITY_CERTIFICATE: CardKind
SPECIFIC_DISEASE_UNSPECIFIED: SpecificDisease
SPECIFIC_DISEASE_DIALYSIS: SpecificDisease
SPECIFIC_DISEASE_HEMOPHILIA: SpecificDisease
SPECIFIC_DISEASE_HIV: SpecificDisease

class Person(_message.Message):
    __slots__ = ("name", "name_kana", "sex", "birth_date", "address", "postcode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    POSTCODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    name_kana: str
    sex: Sex
    birth_date: _date_pb2.Date
    address: str
    postcode: str
    def __init__(self, name: _Optional[str] = ..., name_kana: _Optional[str] = ..., sex: _Optional[_Union[Sex, str]] = ..., birth_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., address: _Optional[str] = ..., postcode: _Optional[str] = ...) -> None: ...

class ElderlyRecipientCertificate(_message.Message):
    __slots__ = ("burden_ratio_percent", "valid_from", "valid_until")
    BURDEN_RATIO_PERCENT_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    burden_ratio_percent: int
    valid_from: _date_pb2.Date
    valid_until: _date_pb2.Date
    def __init__(self, burden_ratio_percent: _Optional[int] = ..., valid_from: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., valid_until: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...

class LimitAmountCertificate(_message.Message):
    __slots__ = ("category", "standard_burden_reduction", "valid_from", "valid_until")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    STANDARD_BURDEN_REDUCTION_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    category: str
    standard_burden_reduction: bool
    valid_from: _date_pb2.Date
    valid_until: _date_pb2.Date
    def __init__(self, category: _Optional[str] = ..., standard_burden_reduction: _Optional[bool] = ..., valid_from: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., valid_until: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...

class SpecificDiseaseCertificate(_message.Message):
    __slots__ = ("disease", "monthly_cap_yen", "valid_from", "valid_until")
    DISEASE_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_CAP_YEN_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    disease: SpecificDisease
    monthly_cap_yen: int
    valid_from: _date_pb2.Date
    valid_until: _date_pb2.Date
    def __init__(self, disease: _Optional[_Union[SpecificDisease, str]] = ..., monthly_cap_yen: _Optional[int] = ..., valid_from: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., valid_until: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...

class PublicExpenseSubsidy(_message.Message):
    __slots__ = ("payer_number", "recipient_number", "programme", "burden_ratio_percent", "monthly_cap_yen", "valid_from", "valid_until")
    PAYER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PROGRAMME_FIELD_NUMBER: _ClassVar[int]
    BURDEN_RATIO_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_CAP_YEN_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    payer_number: str
    recipient_number: str
    programme: str
    burden_ratio_percent: int
    monthly_cap_yen: int
    valid_from: _date_pb2.Date
    valid_until: _date_pb2.Date
    def __init__(self, payer_number: _Optional[str] = ..., recipient_number: _Optional[str] = ..., programme: _Optional[str] = ..., burden_ratio_percent: _Optional[int] = ..., monthly_cap_yen: _Optional[int] = ..., valid_from: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., valid_until: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...

class Qualification(_message.Message):
    __slots__ = ("person", "insurer_number", "insurer_name", "symbol", "number", "branch", "relationship", "acquisition_date", "loss_date", "loss_reason", "burden_ratio_percent", "preschool", "card_kind", "elderly_recipient", "limit_amount", "specific_diseases", "subsidies", "preschool_until")
    PERSON_FIELD_NUMBER: _ClassVar[int]
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    INSURER_NAME_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    RELATIONSHIP_FIELD_NUMBER: _ClassVar[int]
    ACQUISITION_DATE_FIELD_NUMBER: _ClassVar[int]
    LOSS_DATE_FIELD_NUMBER: _ClassVar[int]
    LOSS_REASON_FIELD_NUMBER: _ClassVar[int]
    BURDEN_RATIO_PERCENT_FIELD_NUMBER: _ClassVar[int]
    PRESCHOOL_FIELD_NUMBER: _ClassVar[int]
    CARD_KIND_FIELD_NUMBER: _ClassVar[int]
    ELDERLY_RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SPECIFIC_DISEASES_FIELD_NUMBER: _ClassVar[int]
    SUBSIDIES_FIELD_NUMBER: _ClassVar[int]
    PRESCHOOL_UNTIL_FIELD_NUMBER: _ClassVar[int]
    person: Person
    insurer_number: str
    insurer_name: str
    symbol: str
    number: str
    branch: str
    relationship: Relationship
    acquisition_date: _date_pb2.Date
    loss_date: _date_pb2.Date
    loss_reason: LossReason
    burden_ratio_percent: int
    preschool: bool
    card_kind: CardKind
    elderly_recipient: ElderlyRecipientCertificate
    limit_amount: LimitAmountCertificate
    specific_diseases: _containers.RepeatedCompositeFieldContainer[SpecificDiseaseCertificate]
    subsidies: _containers.RepeatedCompositeFieldContainer[PublicExpenseSubsidy]
    preschool_until: _date_pb2.Date
    def __init__(self, person: _Optional[_Union[Person, _Mapping]] = ..., insurer_number: _Optional[str] = ..., insurer_name: _Optional[str] = ..., symbol: _Optional[str] = ..., number: _Optional[str] = ..., branch: _Optional[str] = ..., relationship: _Optional[_Union[Relationship, str]] = ..., acquisition_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., loss_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., loss_reason: _Optional[_Union[LossReason, str]] = ..., burden_ratio_percent: _Optional[int] = ..., preschool: _Optional[bool] = ..., card_kind: _Optional[_Union[CardKind, str]] = ..., elderly_recipient: _Optional[_Union[ElderlyRecipientCertificate, _Mapping]] = ..., limit_amount: _Optional[_Union[LimitAmountCertificate, _Mapping]] = ..., specific_diseases: _Optional[_Iterable[_Union[SpecificDiseaseCertificate, _Mapping]]] = ..., subsidies: _Optional[_Iterable[_Union[PublicExpenseSubsidy, _Mapping]]] = ..., preschool_until: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...
