import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.type import date_pb2 as _date_pb2
from onshi.v1 import qualification_pb2 as _qualification_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollmentOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENROLLMENT_OUTCOME_UNSPECIFIED: _ClassVar[EnrollmentOutcome]
    ENROLLMENT_OUTCOME_ACCEPTED: _ClassVar[EnrollmentOutcome]
    ENROLLMENT_OUTCOME_DUPLICATE: _ClassVar[EnrollmentOutcome]
    ENROLLMENT_OUTCOME_REJECTED: _ClassVar[EnrollmentOutcome]
    ENROLLMENT_OUTCOME_QUARANTINED: _ClassVar[EnrollmentOutcome]
    ENROLLMENT_OUTCOME_DISCARDED: _ClassVar[EnrollmentOutcome]

class QuarantineReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUARANTINE_REASON_UNSPECIFIED: _ClassVar[QuarantineReason]
    QUARANTINE_REASON_RESIDENT_UNKNOWN: _ClassVar[QuarantineReason]
    QUARANTINE_REASON_NAME_MISMATCH: _ClassVar[QuarantineReason]
    QUARANTINE_REASON_KANA_MISMATCH: _ClassVar[QuarantineReason]
    QUARANTINE_REASON_BIRTH_DATE_MISMATCH: _ClassVar[QuarantineReason]
    QUARANTINE_REASON_SEX_MISMATCH: _ClassVar[QuarantineReason]
    QUARANTINE_REASON_ADDRESS_MISMATCH: _ClassVar[QuarantineReason]
    QUARANTINE_REASON_HELD_BEHIND: _ClassVar[QuarantineReason]

class MatchRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MATCH_RULE_UNSPECIFIED: _ClassVar[MatchRule]
    MATCH_RULE_KANJI_SUBSTITUTE: _ClassVar[MatchRule]
    MATCH_RULE_KANJI_OLD_FORM: _ClassVar[MatchRule]
    MATCH_RULE_KANA_SMALL_WRITTEN_LARGE: _ClassVar[MatchRule]
    MATCH_RULE_KANA_OLD_SPELLING: _ClassVar[MatchRule]
    MATCH_RULE_ADDRESS_BLOCK_NOTATION: _ClassVar[MatchRule]
    MATCH_RULE_ADDRESS_PLACE_NAME_KANA: _ClassVar[MatchRule]

class Resolution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOLUTION_UNSPECIFIED: _ClassVar[Resolution]
    RESOLUTION_APPLY: _ClassVar[Resolution]
    RESOLUTION_DISCARD: _ClassVar[Resolution]
ENROLLMENT_OUTCOME_UNSPECIFIED: EnrollmentOutcome
ENROLLMENT_OUTCOME_ACCEPTED: EnrollmentOutcome
ENROLLMENT_OUTCOME_DUPLICATE: EnrollmentOutcome
ENROLLMENT_OUTCOME_REJECTED: EnrollmentOutcome
ENROLLMENT_OUTCOME_QUARANTINED: EnrollmentOutcome
ENROLLMENT_OUTCOME_DISCARDED: EnrollmentOutcome
QUARANTINE_REASON_UNSPECIFIED: QuarantineReason
QUARANTINE_REASON_RESIDENT_UNKNOWN: QuarantineReason
QUARANTINE_REASON_NAME_MISMATCH: QuarantineReason
QUARANTINE_REASON_KANA_MISMATCH: QuarantineReason
QUARANTINE_REASON_BIRTH_DATE_MISMATCH: QuarantineReason
QUARANTINE_REASON_SEX_MISMATCH: QuarantineReason
QUARANTINE_REASON_ADDRESS_MISMATCH: QuarantineReason
QUARANTINE_REASON_HELD_BEHIND: QuarantineReason
MATCH_RULE_UNSPECIFIED: MatchRule
MATCH_RULE_KANJI_SUBSTITUTE: MatchRule
MATCH_RULE_KANJI_OLD_FORM: MatchRule
MATCH_RULE_KANA_SMALL_WRITTEN_LARGE: MatchRule
MATCH_RULE_KANA_OLD_SPELLING: MatchRule
MATCH_RULE_ADDRESS_BLOCK_NOTATION: MatchRule
MATCH_RULE_ADDRESS_PLACE_NAME_KANA: MatchRule
RESOLUTION_UNSPECIFIED: Resolution
RESOLUTION_APPLY: Resolution
RESOLUTION_DISCARD: Resolution

class Resident(_message.Message):
    __slots__ = ("resident_id", "name", "name_kana", "birth_date", "sex", "address", "postcode")
    RESIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    POSTCODE_FIELD_NUMBER: _ClassVar[int]
    resident_id: str
    name: str
    name_kana: str
    birth_date: _date_pb2.Date
    sex: _qualification_pb2.Sex
    address: str
    postcode: str
    def __init__(self, resident_id: _Optional[str] = ..., name: _Optional[str] = ..., name_kana: _Optional[str] = ..., birth_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., sex: _Optional[_Union[_qualification_pb2.Sex, str]] = ..., address: _Optional[str] = ..., postcode: _Optional[str] = ...) -> None: ...

class InsuredNumber(_message.Message):
    __slots__ = ("symbol", "number", "branch")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    number: str
    branch: str
    def __init__(self, symbol: _Optional[str] = ..., number: _Optional[str] = ..., branch: _Optional[str] = ...) -> None: ...

class EnrollmentUpdate(_message.Message):
    __slots__ = ("update_id", "insurer_number", "resident_id", "person", "acquisition", "loss", "dependent_addition", "dependent_removal", "burden_ratio_change", "certificates_change", "subsidies_change", "basic_information_change")
    UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_FIELD_NUMBER: _ClassVar[int]
    ACQUISITION_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    DEPENDENT_ADDITION_FIELD_NUMBER: _ClassVar[int]
    DEPENDENT_REMOVAL_FIELD_NUMBER: _ClassVar[int]
    BURDEN_RATIO_CHANGE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_CHANGE_FIELD_NUMBER: _ClassVar[int]
    SUBSIDIES_CHANGE_FIELD_NUMBER: _ClassVar[int]
    BASIC_INFORMATION_CHANGE_FIELD_NUMBER: _ClassVar[int]
    update_id: str
    insurer_number: str
    resident_id: str
    person: _qualification_pb2.Person
    acquisition: Acquisition
    loss: Loss
    dependent_addition: DependentAddition
    dependent_removal: DependentRemoval
    burden_ratio_change: BurdenRatioChange
    certificates_change: CertificatesChange
    subsidies_change: SubsidiesChange
    basic_information_change: BasicInformationChange
    def __init__(self, update_id: _Optional[str] = ..., insurer_number: _Optional[str] = ..., resident_id: _Optional[str] = ..., person: _Optional[_Union[_qualification_pb2.Person, _Mapping]] = ..., acquisition: _Optional[_Union[Acquisition, _Mapping]] = ..., loss: _Optional[_Union[Loss, _Mapping]] = ..., dependent_addition: _Optional[_Union[DependentAddition, _Mapping]] = ..., dependent_removal: _Optional[_Union[DependentRemoval, _Mapping]] = ..., burden_ratio_change: _Optional[_Union[BurdenRatioChange, _Mapping]] = ..., certificates_change: _Optional[_Union[CertificatesChange, _Mapping]] = ..., subsidies_change: _Optional[_Union[SubsidiesChange, _Mapping]] = ..., basic_information_change: _Optional[_Union[BasicInformationChange, _Mapping]] = ...) -> None: ...

class Acquisition(_message.Message):
    __slots__ = ("qualification",)
    QUALIFICATION_FIELD_NUMBER: _ClassVar[int]
    qualification: _qualification_pb2.Qualification
    def __init__(self, qualification: _Optional[_Union[_qualification_pb2.Qualification, _Mapping]] = ...) -> None: ...

class Loss(_message.Message):
    __slots__ = ("insured_number", "loss_date", "loss_reason")
    INSURED_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LOSS_DATE_FIELD_NUMBER: _ClassVar[int]
    LOSS_REASON_FIELD_NUMBER: _ClassVar[int]
    insured_number: InsuredNumber
    loss_date: _date_pb2.Date
    loss_reason: _qualification_pb2.LossReason
    def __init__(self, insured_number: _Optional[_Union[InsuredNumber, _Mapping]] = ..., loss_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., loss_reason: _Optional[_Union[_qualification_pb2.LossReason, str]] = ...) -> None: ...

class DependentAddition(_message.Message):
    __slots__ = ("qualification",)
    QUALIFICATION_FIELD_NUMBER: _ClassVar[int]
    qualification: _qualification_pb2.Qualification
    def __init__(self, qualification: _Optional[_Union[_qualification_pb2.Qualification, _Mapping]] = ...) -> None: ...

class DependentRemoval(_message.Message):
    __slots__ = ("insured_number", "loss_date", "loss_reason")
    INSURED_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LOSS_DATE_FIELD_NUMBER: _ClassVar[int]
    LOSS_REASON_FIELD_NUMBER: _ClassVar[int]
    insured_number: InsuredNumber
    loss_date: _date_pb2.Date
    loss_reason: _qualification_pb2.LossReason
    def __init__(self, insured_number: _Optional[_Union[InsuredNumber, _Mapping]] = ..., loss_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., loss_reason: _Optional[_Union[_qualification_pb2.LossReason, str]] = ...) -> None: ...

class BurdenRatioChange(_message.Message):
    __slots__ = ("insured_number", "burden_ratio_percent", "effective_date")
    INSURED_NUMBER_FIELD_NUMBER: _ClassVar[int]
    BURDEN_RATIO_PERCENT_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_DATE_FIELD_NUMBER: _ClassVar[int]
    insured_number: InsuredNumber
    burden_ratio_percent: int
    effective_date: _date_pb2.Date
    def __init__(self, insured_number: _Optional[_Union[InsuredNumber, _Mapping]] = ..., burden_ratio_percent: _Optional[int] = ..., effective_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...

class CertificatesChange(_message.Message):
    __slots__ = ("insured_number", "elderly_recipient", "limit_amount", "specific_diseases", "effective_date")
    INSURED_NUMBER_FIELD_NUMBER: _ClassVar[int]
    ELDERLY_RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SPECIFIC_DISEASES_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_DATE_FIELD_NUMBER: _ClassVar[int]
    insured_number: InsuredNumber
    elderly_recipient: _qualification_pb2.ElderlyRecipientCertificate
    limit_amount: _qualification_pb2.LimitAmountCertificate
    specific_diseases: _containers.RepeatedCompositeFieldContainer[_qualification_pb2.SpecificDiseaseCertificate]
    effective_date: _date_pb2.Date
    def __init__(self, insured_number: _Optional[_Union[InsuredNumber, _Mapping]] = ..., elderly_recipient: _Optional[_Union[_qualification_pb2.ElderlyRecipientCertificate, _Mapping]] = ..., limit_amount: _Optional[_Union[_qualification_pb2.LimitAmountCertificate, _Mapping]] = ..., specific_diseases: _Optional[_Iterable[_Union[_qualification_pb2.SpecificDiseaseCertificate, _Mapping]]] = ..., effective_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...

class SubsidiesChange(_message.Message):
    __slots__ = ("insured_number", "subsidies", "effective_date")
    INSURED_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SUBSIDIES_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_DATE_FIELD_NUMBER: _ClassVar[int]
    insured_number: InsuredNumber
    subsidies: _containers.RepeatedCompositeFieldContainer[_qualification_pb2.PublicExpenseSubsidy]
    effective_date: _date_pb2.Date
    def __init__(self, insured_number: _Optional[_Union[InsuredNumber, _Mapping]] = ..., subsidies: _Optional[_Iterable[_Union[_qualification_pb2.PublicExpenseSubsidy, _Mapping]]] = ..., effective_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...

class BasicInformationChange(_message.Message):
    __slots__ = ("effective_date",)
    EFFECTIVE_DATE_FIELD_NUMBER: _ClassVar[int]
    effective_date: _date_pb2.Date
    def __init__(self, effective_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...

class FieldViolation(_message.Message):
    __slots__ = ("field", "description")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    field: str
    description: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class LooseMatch(_message.Message):
    __slots__ = ("field", "rules")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    field: str
    rules: _containers.RepeatedScalarFieldContainer[MatchRule]
    def __init__(self, field: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[MatchRule, str]]] = ...) -> None: ...

class EnrollmentAck(_message.Message):
    __slots__ = ("update_id", "outcome", "first_outcome", "field_violations", "quarantine_id", "quarantine_reasons", "message", "loose_matches")
    UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    FIRST_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    FIELD_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_ID_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_REASONS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LOOSE_MATCHES_FIELD_NUMBER: _ClassVar[int]
    update_id: str
    outcome: EnrollmentOutcome
    first_outcome: EnrollmentOutcome
    field_violations: _containers.RepeatedCompositeFieldContainer[FieldViolation]
    quarantine_id: int
    quarantine_reasons: _containers.RepeatedScalarFieldContainer[QuarantineReason]
    message: str
    loose_matches: _containers.RepeatedCompositeFieldContainer[LooseMatch]
    def __init__(self, update_id: _Optional[str] = ..., outcome: _Optional[_Union[EnrollmentOutcome, str]] = ..., first_outcome: _Optional[_Union[EnrollmentOutcome, str]] = ..., field_violations: _Optional[_Iterable[_Union[FieldViolation, _Mapping]]] = ..., quarantine_id: _Optional[int] = ..., quarantine_reasons: _Optional[_Iterable[_Union[QuarantineReason, str]]] = ..., message: _Optional[str] = ..., loose_matches: _Optional[_Iterable[_Union[LooseMatch, _Mapping]]] = ...) -> None: ...

class StreamUpdateBatchesRequest(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[EnrollmentUpdate]
    def __init__(self, updates: _Optional[_Iterable[_Union[EnrollmentUpdate, _Mapping]]] = ...) -> None: ...

class StreamUpdateBatchesResponse(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[EnrollmentAck]
    def __init__(self, acks: _Optional[_Iterable[_Union[EnrollmentAck, _Mapping]]] = ...) -> None: ...

class PutResidentsRequest(_message.Message):
    __slots__ = ("residents",)
    RESIDENTS_FIELD_NUMBER: _ClassVar[int]
    residents: _containers.RepeatedCompositeFieldContainer[Resident]
    def __init__(self, residents: _Optional[_Iterable[_Union[Resident, _Mapping]]] = ...) -> None: ...

class PutResidentsResponse(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: int
    def __init__(self, stored: _Optional[int] = ...) -> None: ...

class QuarantinedUpdate(_message.Message):
    __slots__ = ("quarantine_id", "update", "reasons", "message", "received_time", "registry_record")
    QUARANTINE_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_TIME_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_RECORD_FIELD_NUMBER: _ClassVar[int]
    quarantine_id: int
    update: EnrollmentUpdate
    reasons: _containers.RepeatedScalarFieldContainer[QuarantineReason]
    message: str
    received_time: _timestamp_pb2.Timestamp
    registry_record: Resident
    def __init__(self, quarantine_id: _Optional[int] = ..., update: _Optional[_Union[EnrollmentUpdate, _Mapping]] = ..., reasons: _Optional[_Iterable[_Union[QuarantineReason, str]]] = ..., message: _Optional[str] = ..., received_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., registry_record: _Optional[_Union[Resident, _Mapping]] = ...) -> None: ...

class ListQuarantineRequest(_message.Message):
    __slots__ = ("insurer_number", "page_size", "after_quarantine_id")
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    AFTER_QUARANTINE_ID_FIELD_NUMBER: _ClassVar[int]
    insurer_number: str
    page_size: int
    after_quarantine_id: int
    def __init__(self, insurer_number: _Optional[str] = ..., page_size: _Optional[int] = ..., after_quarantine_id: _Optional[int] = ...) -> None: ...

class ListQuarantineResponse(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[QuarantinedUpdate]
    def __init__(self, updates: _Optional[_Iterable[_Union[QuarantinedUpdate, _Mapping]]] = ...) -> None: ...

class ResolveQuarantineRequest(_message.Message):
    __slots__ = ("quarantine_id", "resolution", "corrected_person", "reason")
    QUARANTINE_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_PERSON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    quarantine_id: int
    resolution: Resolution
    corrected_person: _qualification_pb2.Person
    reason: str
    def __init__(self, quarantine_id: _Optional[int] = ..., resolution: _Optional[_Union[Resolution, str]] = ..., corrected_person: _Optional[_Union[_qualification_pb2.Person, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ResolveQuarantineResponse(_message.Message):
    __slots__ = ("ack", "released")
    ACK_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    ack: EnrollmentAck
    released: _containers.RepeatedCompositeFieldContainer[EnrollmentAck]
    def __init__(self, ack: _Optional[_Union[EnrollmentAck, _Mapping]] = ..., released: _Optional[_Iterable[_Union[EnrollmentAck, _Mapping]]] = ...) -> None: ...

class InsurerNotice(_message.Message):
    __slots__ = ("notice_id", "insurer_number", "insured_number", "new_insurer_number", "new_acquisition_date", "created_time")
    NOTICE_ID_FIELD_NUMBER: _ClassVar[int]
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    INSURED_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NEW_INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NEW_ACQUISITION_DATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_TIME_FIELD_NUMBER: _ClassVar[int]
    notice_id: int
    insurer_number: str
    insured_number: InsuredNumber
    new_insurer_number: str
    new_acquisition_date: _date_pb2.Date
    created_time: _timestamp_pb2.Timestamp
    def __init__(self, notice_id: _Optional[int] = ..., insurer_number: _Optional[str] = ..., insured_number: _Optional[_Union[InsuredNumber, _Mapping]] = ..., new_insurer_number: _Optional[str] = ..., new_acquisition_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., created_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListNoticesRequest(_message.Message):
    __slots__ = ("insurer_number", "page_size", "after_notice_id")
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    AFTER_NOTICE_ID_FIELD_NUMBER: _ClassVar[int]
    insurer_number: str
    page_size: int
    after_notice_id: int
    def __init__(self, insurer_number: _Optional[str] = ..., page_size: _Optional[int] = ..., after_notice_id: _Optional[int] = ...) -> None: ...

class ListNoticesResponse(_message.Message):
    __slots__ = ("notices",)
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    notices: _containers.RepeatedCompositeFieldContainer[InsurerNotice]
    def __init__(self, notices: _Optional[_Iterable[_Union[InsurerNotice, _Mapping]]] = ...) -> None: ...

class AcknowledgeNoticesRequest(_message.Message):
    __slots__ = ("notice_ids",)
    NOTICE_IDS_FIELD_NUMBER: _ClassVar[int]
    notice_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, notice_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class AcknowledgeNoticesResponse(_message.Message):
    __slots__ = ("acknowledged",)
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    acknowledged: int
    def __init__(self, acknowledged: _Optional[int] = ...) -> None: ...

class LinkCardRequest(_message.Message):
    __slots__ = ("card_serial", "resident_id", "person", "insurer_number", "insured_number", "consent")
    CARD_SERIAL_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_FIELD_NUMBER: _ClassVar[int]
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    INSURED_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    card_serial: str
    resident_id: str
    person: _qualification_pb2.Person
    insurer_number: str
    insured_number: InsuredNumber
    consent: bool
    def __init__(self, card_serial: _Optional[str] = ..., resident_id: _Optional[str] = ..., person: _Optional[_Union[_qualification_pb2.Person, _Mapping]] = ..., insurer_number: _Optional[str] = ..., insured_number: _Optional[_Union[InsuredNumber, _Mapping]] = ..., consent: _Optional[bool] = ...) -> None: ...

class LinkCardResponse(_message.Message):
    __slots__ = ("replaced_card_serial", "link_notice_id", "loose_matches")
    REPLACED_CARD_SERIAL_FIELD_NUMBER: _ClassVar[int]
    LINK_NOTICE_ID_FIELD_NUMBER: _ClassVar[int]
    LOOSE_MATCHES_FIELD_NUMBER: _ClassVar[int]
    replaced_card_serial: str
    link_notice_id: int
    loose_matches: _containers.RepeatedCompositeFieldContainer[LooseMatch]
    def __init__(self, replaced_card_serial: _Optional[str] = ..., link_notice_id: _Optional[int] = ..., loose_matches: _Optional[_Iterable[_Union[LooseMatch, _Mapping]]] = ...) -> None: ...

class LinkNotice(_message.Message):
    __slots__ = ("link_notice_id", "resident_id", "card_serial", "insurer_number", "insured_number", "linked_time", "consent_time")
    LINK_NOTICE_ID_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    CARD_SERIAL_FIELD_NUMBER: _ClassVar[int]
    INSURER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    INSURED_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LINKED_TIME_FIELD_NUMBER: _ClassVar[int]
    CONSENT_TIME_FIELD_NUMBER: _ClassVar[int]
    link_notice_id: int
    resident_id: str
    card_serial: str
    insurer_number: str
    insured_number: InsuredNumber
    linked_time: _timestamp_pb2.Timestamp
    consent_time: _timestamp_pb2.Timestamp
    def __init__(self, link_notice_id: _Optional[int] = ..., resident_id: _Optional[str] = ..., card_serial: _Optional[str] = ..., insurer_number: _Optional[str] = ..., insured_number: _Optional[_Union[InsuredNumber, _Mapping]] = ..., linked_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., consent_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListLinkNoticesRequest(_message.Message):
    __slots__ = ("resident_id",)
    RESIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    resident_id: str
    def __init__(self, resident_id: _Optional[str] = ...) -> None: ...

class ListLinkNoticesResponse(_message.Message):
    __slots__ = ("notices",)
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    notices: _containers.RepeatedCompositeFieldContainer[LinkNotice]
    def __init__(self, notices: _Optional[_Iterable[_Union[LinkNotice, _Mapping]]] = ...) -> None: ...
