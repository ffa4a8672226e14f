"""Code lists from the spec's appendix (附录 数据字典) and from inline field remarks.

Every enumeration is a `StrEnum` whose values are exactly the wire codes, so a member compares
equal to (and serialises as) the plain string. Only lists the spec gives completely are here;
fields whose codes the spec leaves open stay plain strings (see docs/protocol-notes.md).
"""

from __future__ import annotations

from enum import StrEnum


class IdType(StrEnum):
    """证件类型 (idType, psn_cert_type)."""

    RESIDENT_ID = "01"
    HONG_KONG_MACAO_ID = "02"
    TAIWAN_ID = "03"
    PASSPORT = "04"
    OFFICER_ID = "05"
    BIRTH_CERTIFICATE = "06"
    OTHER = "99"


class OrderType(StrEnum):
    """订单类型 (orderType) of a payment."""

    OTHER = "0"
    REGISTRATION = "1"
    INPATIENT = "2"
    OUTPATIENT = "3"
    PHYSICAL_EXAM = "4"
    PRESCRIPTION = "5"
    EXAMINATION = "6"


class OrderStatus(StrEnum):
    """订单状态 (orderStatus)."""

    PAYING = "01"
    PAID = "02"
    PAY_FAILED = "03"
    REFUNDING = "11"
    REFUNDED = "12"
    REFUND_FAILED = "13"
    SETTLING = "31"
    SETTLED = "32"
    SETTLE_FAILED = "33"
    REVOKING = "41"
    REVOKED = "42"
    REVOKE_FAILED = "43"


#: states after which a status query need not be repeated
FINAL_ORDER_STATUSES = frozenset(
    {
        OrderStatus.PAID,
        OrderStatus.PAY_FAILED,
        OrderStatus.REFUNDED,
        OrderStatus.REFUND_FAILED,
        OrderStatus.SETTLED,
        OrderStatus.SETTLE_FAILED,
        OrderStatus.REVOKED,
        OrderStatus.REVOKE_FAILED,
    }
)


class AccType(StrEnum):
    """交易账户类型 (accType); the spec leaves it empty when the amount is 0."""

    DEBIT_CARD = "01"
    CREDIT_CARD = "02"
    CREDIT_PRODUCT = "03"
    MEDICAL_INSURANCE_ACCOUNT = "04"


class SignStatus(StrEnum):
    """签约状态 (HOS00001 signStatus)."""

    NOT_SIGNED = "0"
    SIGNED = "1"
    FROZEN = "9"


class CreditPay(StrEnum):
    """是否使用医闪付支付 (HOS00001 creditPay)."""

    USE = "01"
    DO_NOT_USE = "02"


class SettlementQueryType(StrEnum):
    """HOS00016 `type`: which order the query is about."""

    SETTLEMENT = "01"
    SETTLEMENT_REVOKE = "02"  # HOS00015 is abolished, but old revokes may still be queried


class StatementTradeType(StrEnum):
    """交易类型 of a line in the HOS00013 statement file."""

    PAY = "01"
    REFUND = "02"


class ClaimType(StrEnum):
    """理赔类型."""

    DIRECT = "1"  # 直赔
    QUICK = "2"  # 快赔


class ClaimNode(StrEnum):
    """保险环节 (claimNode)."""

    NO_CASE = "0"
    REPORTED = "1"
    FEES_UPLOADED = "2"
    TRIAL = "3"
    SETTLED = "4"
    CANCELLED = "9"
    RELIEF_APPROVED = "11"  # 粤就助受理审批完成
    RELIEF_PAID = "12"  # 粤就助支付成功


class ClaimStatus(StrEnum):
    """理赔单状态 (claimStatus): listed in the appendix, carried by no field table."""

    REVOKED = "0"
    APPLIED = "1"
    HOSPITAL_REPORTED = "2"
    INSURER_DECLARED = "3"
    FEES_UPLOADED = "5"
    TRIAL_DONE = "61"
    SETTLED = "62"
    INSURER_PAID = "71"
    INSURER_REFUSED = "72"
    CLOSED = "9"


class UploadStatus(StrEnum):
    """HOS00027 `status`: whether every upload call is done."""

    DONE = "1"
    NOT_DONE = "2"


class VerifyStatus(StrEnum):
    """HOS00028 审核标记 (verifyStatus)."""

    PENDING = "0"
    REJECTED = "1"
    APPROVED = "2"
    NOT_REQUIRED = "3"


class VisitType(StrEnum):
    """就诊类别 / 诊疗方式 as a 4-digit code (HIS00003 medType, HOS00022 expenMode)."""

    OUTPATIENT = "0020"
    EMERGENCY = "0030"
    INPATIENT = "0040"


class Gender(StrEnum):
    """性别 (gend)."""

    UNKNOWN = "0"
    MALE = "1"
    FEMALE = "2"
    UNSPECIFIED = "9"


#: the same code list where the spec types gender as an integer (HOS00021)
GENDER_INT_CODES = frozenset({0, 1, 2, 9})


class AdmissionStatus(StrEnum):
    """住院状态; also HOS00020 dischargeState (1-未出院, 2-已出院)."""

    IN_HOSPITAL = "1"
    DISCHARGED = "2"


class DischargeOutcome(StrEnum):
    """出院状态 (HOS00021 dischargeState)."""

    CURED = "1"
    IMPROVED = "2"
    NOT_CURED = "3"
    DIED = "4"
    OTHER = "90"


class DiagnosisType(StrEnum):
    """诊断类型 (HOS00021 diagnosisList.type)."""

    PRIMARY = "1"
    ADMISSION = "21"
    DISCHARGE = "22"
    OTHER = "9"


class ReimbursementCategory(StrEnum):
    """报销类别."""

    CLASS_A = "1"
    CLASS_B = "2"
    CLASS_C = "3"


class MedCategory(StrEnum):
    """医疗类别 (med_type), HOS00023 medType."""

    GENERAL_OUTPATIENT = "11"
    OUTPATIENT_REGISTRATION = "12"
    EMERGENCY = "13"
    CHRONIC_OUTPATIENT = "14"
    GENERAL_INPATIENT = "21"
    TRAUMA_INPATIENT = "22"
    REFERRAL_INPATIENT = "23"
    EMERGENCY_TO_INPATIENT = "24"
    PHARMACY = "41"
    MATERNITY_OUTPATIENT = "51"
    MATERNITY_INPATIENT = "52"
    FAMILY_PLANNING_SURGERY = "53"
    OTHER_OUTPATIENT = "91"
    OTHER_INPATIENT = "92"
    OTHER_PHARMACY = "93"
    LOCAL_EXTENSION = "99"


class Flag01(StrEnum):
    """A 0/1 flag (drugAllergyFlag, priceLimitFlag, quantityLimitFlag, elecSetlCertFlag)."""

    NO = "0"
    YES = "1"


class YesNo(StrEnum):
    """Y/N flag (HOS00023 settleFlag)."""

    YES = "Y"
    NO = "N"


class OneOrTwo(StrEnum):
    """A 1/2 code whose meaning the field's remark gives (mdtrtType, isInsuranceCovered, ...)."""

    ONE = "1"
    TWO = "2"


class ReceiptUploadType(StrEnum):
    """HOS00023 rcptType: only `D` (delete) is defined; absent means upload."""

    DELETE = "D"


class ReceiptEntryMode(StrEnum):
    """HOS00023 rcptDcType 票据录入方式."""

    SUMMARY = "M"
    DETAIL = "D"
    SUMMARY_EXTENDED = "S"


class ImageType(StrEnum):
    """影像类型 (HOS00028 imageType)."""

    APPLICATION_AND_MANDATE = "3001"
    ACCIDENT_PROOF = "3003"
    DEATH_PROOF = "4114"
    INJURY_PROOF = "4113"
    DISABILITY_PROOF = "4115"
    INCAPACITY_PROOF = "4400"
    INCAPACITY_ASSESSMENT = "4444"
    MEDICAL_RECORDS = "3011"
    OUTPATIENT_RECORD = "3089"
    SURGERY_RECORD = "3046"
    ADMISSION_RECORD = "4119"
    DISCHARGE_SUMMARY = "3044"
    DIAGNOSIS_CERTIFICATE = "3045"
    LAB_REPORT = "4118"
    ADMISSION_CERTIFICATE = "3066"
    BED_CARD_OR_WRISTBAND = "3088"
    MEDICAL_EXPENSES = "3004"
    RECEIPT_UNINSURED = "3030"
    RECEIPT_INSURED = "3032"
    EXPENSE_LIST = "3033"
    ELECTRONIC_RECEIPT = "3085"
    ELECTRONIC_EXPENSE_LIST = "3084"
    INSURANCE_SPLIT_SHEET = "3031"
    ENROLMENT_PROOF = "3040"
    BANK_CARD_COPY = "5009"
    IDENTITY_AND_RELATION = "9003"
    ID_CARD_FRONT = "9099"
    ID_CARD_BACK = "9098"
    HOUSEHOLD_REGISTER = "9097"
    RIGHTS_TRANSFER = "3080"
    AML_AND_TAX_RESIDENCY = "3079"
    BATCH_CLAIM_MATERIALS = "3050"
    CLAIM_DECISION = "3010"
    INVESTIGATION = "9005"
    RECONSIDERATION = "9006"
    CUSTOMER_AUTHORISATION_CA_PDF = "9007"
    LITIGATION = "9008"
    OTHER = "3099"
    VIDEO_INVESTIGATION_AUTHORISATION = "9010"
    RELIEF_FUND_ADVANCE_APPLICATION = "01"
    INJURED_PARTY_ID = "02"
    KINSHIP_PROOF = "03"
    RESCUE_ADVANCE_NOTICE = "04"
    DIAGNOSIS_PROOF = "05"
    RELIEF_FUND_SETTLEMENT_APPLICATION = "06"
    DISCHARGE_AND_ADMISSION_RECORDS = "07"
    DISEASE_DIAGNOSIS_PROOF = "08"
    CASE_FRONT_PAGE = "09"
    DOCTOR_ORDERS = "10"
    FIRST_ADMISSION_NOTE = "11"
    PROGRESS_NOTES = "12"
    SURGERY_NOTE = "13"
    NURSING_RECORD = "14"
    EXAMINATION_REPORT = "15"
    RESCUE_EXPENSE_LIST = "16"
    HOSPITAL_ACCOUNT_INFO = "17"
    DEPOSIT_SLIP = "18"
    RESCUE_OVER_7_DAYS_NOTE = "19"
    ACCIDENT_LIABILITY_FINDING = "20"
    VEHICLE_POLICY_AND_LICENCES = "21"


class RtCode(StrEnum):
    """系统响应码 (envelope rtCode), for the envelope and client layers."""

    SUCCESS = "0000"
    NO_SUCH_USER = "0001"
    SIGNING_FROZEN = "0002"
    BUSINESS_FAILURE = "1000"
    BAD_MESSAGE = "4000"
    DUPLICATE_SEQ_ID = "4008"
    INVALID_PLATFORM = "4104"
    SETTLE_SPEND_EXCEEDS_PAID = "5501"
    SETTLE_BANK_REFUND_FAILED = "5502"
    UNKNOWN = "9999"
