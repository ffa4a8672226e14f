"""Commercial-insurance claims (quick / direct claims): spec 3.2.11 - 3.2.19.

The hospital uploads patient data, the medical record, fees, invoices, reports and images,
then submits (HOS00027) or cancels (HOS00026) the case and follows it with HOS00029 (those,
and the image upload HOS00028, are in claim_cases.py). The spec gives the uploads an empty
response table (`EmptyResponse`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, StrictInt, ValidationInfo, field_validator

from worker.protocol.models.base import (
    Decimal12x4,
    Decimal12x6,
    FenText,
    FenText12,
    HospitalMessage,
    IsoDate,
    IsoDateTime,
    Name2to8,
    Name2to10,
    Opt,
    PercentText,
    QuantityText,
    SerialNo,
    must_match,
    one_of_ints,
    require_when,
    up_to,
)
from worker.protocol.models.enums import (
    GENDER_INT_CODES,
    AdmissionStatus,
    DiagnosisType,
    DischargeOutcome,
    Flag01,
    Gender,
    MedCategory,
    OneOrTwo,
    ReceiptEntryMode,
    ReceiptUploadType,
    ReimbursementCategory,
    VisitType,
    YesNo,
)

Text2 = Annotated[str, up_to(2)]
Text10 = Annotated[str, up_to(10)]
Text20 = Annotated[str, up_to(20)]
Text30 = Annotated[str, up_to(30)]
Text32 = Annotated[str, up_to(32)]
Text50 = Annotated[str, up_to(50)]
Text64 = Annotated[str, up_to(64)]
Text128 = Annotated[str, up_to(128)]
Text256 = Annotated[str, up_to(256)]
Text1024 = Annotated[str, up_to(1024)]
IdNo18 = Annotated[str, up_to(18)]
#: an integer code of at most 2 digits (HOS00021 documentsType)
IntCode2 = Annotated[StrictInt, Field(ge=0, le=99)]


# --- 3.2.11 HOS00020 患者资料 -----------------------------------------------------------


class NewBorn(HospitalMessage):
    name: Name2to10
    documentsType: Text2  # "11=身份证…28=其它团体": a list the spec does not give in full
    documentsNo: Text64


class PatientDataRequest(HospitalMessage):
    patientId: SerialNo
    treatmentSerialNo: SerialNo
    name: Name2to8
    documentsType: Text2
    documentsNo: IdNo18
    treatmentType: Text20  # "1-其他、2-急诊科室" here, other codes in the appendix: no enum
    treatmentTime: IsoDateTime
    dischargeTime: Opt[IsoDateTime] = None
    dischargeState: Opt[AdmissionStatus] = None  # 1-未出院, 2-已出院
    medicalInsuranceType: Annotated[str, up_to(3)]  # spec: 2; insutype codes have 3 digits
    socialSecurityNo: Opt[Text64] = None
    medicalRecordNo: Opt[Text64] = None
    departmentName: Opt[Text64] = None
    doctorName: Opt[Text64] = None
    prepayment: Opt[FenText] = None  # spec length 64 for an amount in fen; 11 digits suffice
    total: Opt[FenText] = None
    medicalInsuranceTotal: Opt[FenText] = None
    selfPaymentTotal: Opt[FenText] = None
    outPocketTotal: Opt[FenText] = None
    tel: Opt[Annotated[str, up_to(11)]] = None
    nationality: Opt[Text10] = None
    birthPlace: Opt[Text64] = None
    address: Opt[Text256] = None
    drugAllergyFlag: Opt[Flag01] = None
    newBorn: Opt[NewBorn] = None


# --- 3.2.12 HOS00021 电子病历诊疗信息 ---------------------------------------------------


class Diagnosis(HospitalMessage):
    type: DiagnosisType
    content: Opt[Text1024] = None
    diseaseCode: Text64  # ICD-10
    diseaseName: Text64
    diagnosisTime: IsoDateTime


class Operation(HospitalMessage):
    surgicalName: Text256
    surgicalCode: Text1024
    surgicalStartTime: IsoDateTime
    surgicalEndTime: IsoDateTime


class MedicalRecordRequest(HospitalMessage):
    patientId: SerialNo
    treatmentSerialNo: SerialNo
    hospitalRegSn: Opt[Text128] = None
    name: Name2to8
    gender: Annotated[StrictInt, one_of_ints(GENDER_INT_CODES)]  # typed integer here
    documentsType: IntCode2
    documentsNo: IdNo18
    tel: Opt[Annotated[str, up_to(11)]] = None
    admissionTime: Opt[IsoDateTime] = None
    dischargeTime: Opt[IsoDateTime] = None
    medicalCause: Opt[Text1024] = None
    departmentId: Opt[Text64] = None
    departmentName: Opt[Text64] = None
    wardNumber: Opt[Text64] = None
    bedNumber: Opt[Text64] = None
    chiefComplaint: Text1024
    firstDiagnosis: Text1024
    otherDiagnoses: Text1024  # M: send "无" when there is none
    presentIllnessHistory: Opt[Text1024] = None
    pastMedicalHistory: Opt[Text1024] = None
    personalHistory: Opt[Text1024] = None
    familyHistory: Opt[Text1024] = None
    complication: Opt[Text1024] = None
    maritalReproductiveHistory: Opt[Text1024] = None
    allergyHistory: Opt[Text1024] = None
    menstrualHistory: Opt[Text1024] = None
    # 诊疗方式, typed integer of length 2, yet the appendix has 7-digit codes (1006064)
    treatmentType: Annotated[StrictInt, Field(ge=0, le=9_999_999)]
    doctorName: Opt[Name2to8] = None
    clinicalPathways: Opt[Text1024] = None
    treatmentPlan: Opt[Text1024] = None
    treatmentProgress: Opt[Text1024] = None
    testReport: Opt[Text1024] = None
    ancillaryExamination: Opt[Text1024] = None
    physicalExamination: Opt[Text1024] = None
    surgicalCode: Opt[Text1024] = None
    surgicalName: Opt[Text256] = None
    admissionStatus: Opt[AdmissionStatus] = None
    dischargeInstruction: Opt[Text1024] = None
    dischargeState: DischargeOutcome
    diagnosisList: Annotated[list[Diagnosis], Field(min_length=1)]
    operationInfoList: Opt[list[Operation]] = None


# --- 3.2.13 HOS00022 费用信息 -----------------------------------------------------------


def _when_flag_set(flag_field: str) -> str:
    return f"{flag_field} is 1"


class FeeDetail(HospitalMessage):
    # the limits are conditional on the flags declared before them
    model_config = ConfigDict(validate_default=True)

    payId: Text128
    itemNo: Text64
    itemName: Opt[Text64] = None
    goodsName: Opt[Text64] = None
    medSpec: Opt[Text64] = None
    dosageForm: Opt[Text64] = None
    feeType: Opt[Text2] = None
    reimbursementCategory: Opt[ReimbursementCategory] = None
    medicalCatalogCode: Text64
    medicalCatalogName: Text64
    priceLimitFlag: Opt[Flag01] = None
    priceLimit: Opt[FenText] = None
    quantityLimitFlag: Opt[Flag01] = None
    quantityLimit: Opt[QuantityText] = None
    price: FenText
    quantity: QuantityText
    outOfPocketRatio: PercentText
    total: FenText
    diagnosticFee: FenText
    bedFee: FenText

    @field_validator("priceLimit")
    @classmethod
    def _price_limit_when_flagged(cls, value: str | None, info: ValidationInfo) -> str | None:
        flagged = info.data.get("priceLimitFlag") == Flag01.YES
        return require_when(value, flagged, _when_flag_set("priceLimitFlag"))

    @field_validator("quantityLimit")
    @classmethod
    def _quantity_limit_when_flagged(cls, value: str | None, info: ValidationInfo) -> str | None:
        flagged = info.data.get("quantityLimitFlag") == Flag01.YES
        return require_when(value, flagged, _when_flag_set("quantityLimitFlag"))


class Fee(HospitalMessage):
    payId: Text128
    total: FenText
    socialInAmnt: FenText  # "0" when none
    socialInsuranceTotal: FenText
    socialPayAmnt: FenText
    thirdpartyPayTotal: FenText
    socialStartPayLineAmnt: Opt[FenText] = None
    selfAAmnt: FenText
    selfBAmnt: FenText
    selfCAmnt: FenText
    totalAmount: FenText
    outOfPocketTotal: FenText
    feeTime: Opt[IsoDateTime] = None
    # the spec's `DetailList` row is nested under feeList; see docs/protocol-notes.md
    detailList: Annotated[list[FeeDetail], Field(min_length=1)]


class FeeDataRequest(HospitalMessage):
    patientId: SerialNo
    treatmentSerialNo: SerialNo
    medicalInsuranceType: Annotated[str, up_to(3)]
    expenMode: VisitType
    feeList: Annotated[list[Fee], Field(min_length=1)]


# --- 3.2.14 HOS00023 电子票据 -----------------------------------------------------------

_UNLESS_DELETING = "rcptType is not 'D' (delete)"
#: billList fields the spec marks M, but which a deletion (rcptType D) may leave out
_REQUIRED_UNLESS_DELETING = (
    "elecSetlCertChkcode",
    "rcptDcType",
    "billAmt",
    "billDate",
    "medSumfee",
    "hifpPay",
    "psnAcctPay",
    "psnCashpay",
    "begntime",
    "endtime",
    "detItemFeeSumamt",
    "medListCodg",
    "medicalProject",
)


class Bill(HospitalMessage):
    """A billList item: one bill line, carrying its bill's identifying fields."""

    model_config = ConfigDict(validate_default=True)

    # rcptType first: the validators below read it (pydantic validates in field order)
    rcptType: Opt[ReceiptUploadType] = None  # D = delete: "only the bill number is needed"
    payId: Text128
    elecSetlCertCode: Text50
    elecSetlCertNo: Text50
    elecSetlCertChkcode: Opt[Annotated[str, up_to(20)]] = None
    elecSetlCertType: Opt[OneOrTwo] = None  # 1 财政电子票据, 2 税务电子发票
    certSetlType: Opt[OneOrTwo] = None  # 1 实时结算, 2 全自费
    rcptDcType: Opt[ReceiptEntryMode] = None
    elecSetlCertFlag: Opt[Flag01] = None  # 1 = a red-letter (reversal) bill
    relElecSetlCertCode: Opt[Text50] = None
    relElecSetlCertNo: Opt[Text50] = None
    supninsCode: Opt[Annotated[str, up_to(6)]] = None
    biller: Opt[Text50] = None
    rechker: Opt[Text50] = None
    billAmt: Opt[FenText12] = None
    billDate: Opt[IsoDate] = None
    billTime: Opt[IsoDateTime] = None
    medSumfee: Opt[FenText12] = None
    hifpPay: Opt[FenText12] = None
    othPay: Opt[FenText12] = None
    psnAcctPay: Opt[FenText12] = None
    psnCashpay: Opt[FenText12] = None
    psnSelfpay: Opt[FenText12] = None
    psnOwnpay: Opt[FenText12] = None
    begntime: Opt[IsoDateTime] = None
    endtime: Opt[IsoDateTime] = None
    feeOcurTime: Opt[IsoDateTime] = None
    cnt: Opt[Decimal12x4] = None
    pric: Opt[Decimal12x6] = None
    detItemFeeSumamt: Opt[FenText12] = None
    medListCodg: Opt[Text50] = None
    medicalProject: Opt[Text50] = None
    spec: Opt[Annotated[str, up_to(200)]] = None

    @field_validator(*_REQUIRED_UNLESS_DELETING)
    @classmethod
    def _required_unless_deleting(cls, value: object, info: ValidationInfo) -> object:
        deleting = info.data.get("rcptType") == ReceiptUploadType.DELETE
        return require_when(value, not deleting, _UNLESS_DELETING)

    @field_validator("relElecSetlCertCode", "relElecSetlCertNo")
    @classmethod
    def _original_bill_for_reversal(cls, value: str | None, info: ValidationInfo) -> str | None:
        reversal = info.data.get("elecSetlCertFlag") == Flag01.YES
        return require_when(value, reversal, _when_flag_set("elecSetlCertFlag"))


class InvoiceRequest(HospitalMessage):
    treatmentSerialNo: SerialNo
    settleFlag: Opt[YesNo] = None  # Y: no more bills will come
    settleDate: Opt[IsoDate] = None
    mdtrtType: OneOrTwo  # 1 门诊, 2 住院
    certno: Text30
    psnName: Text50
    gend: Opt[Gender] = None
    insutype: Opt[Text30] = None
    hiNo: Opt[Text30] = None
    fixmedinsCode: Text30
    fixmedinsName: Annotated[str, up_to(200)]
    hospitalLevel: Text10
    isInsuranceCovered: OneOrTwo  # 1 是, 2 不是
    hospitalType: Text10
    fixBlngAdmdvs: Opt[Annotated[str, up_to(6)]] = None
    medType: Opt[MedCategory] = None
    billList: Annotated[list[Bill], Field(min_length=1)]


# --- 3.2.15 HOS00024 检查报告 -----------------------------------------------------------


class Examination(HospitalMessage):
    reportNo: Text128
    imageNo: Text128
    inspectionDate: IsoDateTime  # "YYYY-MM-DD hh:mm:ss" here, a bare date at the top level
    inspectionName: Text32
    imagePerformance: Text128
    diagnosisOpinion: Text256
    collectionDate: Opt[IsoDateTime] = None
    examinationReportDate: IsoDateTime
    reportingDoctor: Name2to10
    reviewingDoctor: Name2to10


class ExaminationReportRequest(HospitalMessage):
    treatmentSerialNo: SerialNo
    reportNo: Text128
    patientName: Name2to8
    gender: Gender
    age: Annotated[str, up_to(3), must_match(r"\d+", "an age in whole years")]
    imageNo: Text128
    department: Text128
    bedNo: Opt[Text64] = None
    admissionNo: Opt[Text128] = None
    inspectionDate: IsoDate
    inspectionName: Text32
    imagePerformance: Text128
    diagnosisOpinion: Text256
    reportingDoctor: Name2to10
    reviewingDoctor: Name2to10
    examinationList: Opt[list[Examination]] = None
