"""One valid, realistic wire example per transaction, shared by the simulator, demo and tests.

They tell one story. Patient 张三 is admitted (ZY2025090100001), signs up (HOS00025,
HOS00001), pays two deposits by deposit-free payment (HOS00003: 5000.00 yuan, and a second
of 2000.00 yuan seen in the settlement), has 1000.00 yuan of the first refunded (HOS00004,
whose origOrderId is the HOS00003 queryId), and is discharged: the trial (HOST0014) finds
500.00 yuan to refund, the settlement (HOS00014 / HOS00016) settles with the insurer paying
1000.00 yuan. The claim material for the same stay is uploaded with HOS00020-HOS00028.

Amounts are in fen. Treat the dicts as read-only: use `Example.copy()` before changing one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Example:
    request: dict[str, Any]
    response: dict[str, Any]

    def copy(self) -> Example:
        """A deep copy, safe to mutate."""
        return Example(copy.deepcopy(self.request), copy.deepcopy(self.response))


HOSPITAL_ID = "H0000001"
CITY_CODE = "441800"
ID_NO = "441802199001011234"
PATIENT_NAME = "张三"
MOBILE = "13800000001"
INPATIENT_SERIAL = "ZY2025090100001"
PATIENT_ID = "P000123456"
SIGN_TOKEN = "STK7f3a9c2e4b1d4e8f9a0b1c2d3e4f5a6b"
INSURANCE_ID = "INS00001"
INSURANCE_NAME = "中国人寿"

PAY_ORDER_ID = "PAY202509010000000001"
PAY_QUERY_ID = "Q202509010830150000000001"
PAY2_ORDER_ID = "PAY202509030000000002"
PAY2_QUERY_ID = "Q202509030900000000000003"
REFUND_ORDER_ID = "RFD202509050000000001"
REFUND_QUERY_ID = "Q202509051015000000000002"
TRIAL_ID = "TRL202509100000000001"
SETL_ID = "SETL2025091000001"
SETTLE_ORDER_ID = "STL202509100000000001"
SETTLE_QUERY_ID = "Q202509101130000000000004"
DEPOSIT_QUERY_IDS = f"{PAY_QUERY_ID},{PAY2_QUERY_ID}"

TINY_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ"
    "AAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
TINY_PDF_BASE64 = (
    "JVBERi0xLjQKMSAwIG9iajw8L1R5cGUvQ2F0YWxvZz4+ZW5kb2JqCnRyYWlsZXI8PC9Sb290IDEgMCBSPj4KJSVFT0YK"
)

_AT_HOSPITAL = {"hospitalId": HOSPITAL_ID, "cityCode": CITY_CODE}
_DEPOSIT_1 = {
    "orderId": PAY_ORDER_ID,
    "queryId": PAY_QUERY_ID,
    "orderTime": "20250901083015",
    "accType": "02",
    "orderStatus": "02",
    "msg": "支付成功",
}
_DEPOSIT_2 = {
    **_DEPOSIT_1,
    "orderId": PAY2_ORDER_ID,
    "queryId": PAY2_QUERY_ID,
    "orderTime": "20250903090000",
}
_SETTLED = {
    "orderId": SETTLE_ORDER_ID,
    "queryId": SETTLE_QUERY_ID,
    "orderStatus": "32",
    "settleAmt": 700000,
    "insureSettleAmt": 100000,
    "supplementAmt": 0,
    "refundAmt": 50000,
    "msg": "结算成功",
    "miAmt": 0,
    "budgetAmt": 100000,
    "grAmt": 600000,
}
_CLAIM_CASE = {"treatmentSerialNo": INPATIENT_SERIAL, "idNo": ID_NO}
_INSURER = {"insuranceId": INSURANCE_ID, "insuranceName": INSURANCE_NAME, "claimType": "2"}

_PAYMENT = {
    "HOS00025": Example(
        {
            "idNo": ID_NO,
            "userName": PATIENT_NAME,
            "mobile": MOBILE,
            **_AT_HOSPITAL,
            "treatmentSerialNo": INPATIENT_SERIAL,
        },
        {"forwardUrl": "https://huimin.example.cn/h5/sign?ticket=8f2c41d0a7b34e2f"},
    ),
    "HOS00001": Example(
        {
            "idNo": ID_NO,
            "idType": "01",
            "userName": PATIENT_NAME,
            **_AT_HOSPITAL,
            "treatmentSerialNo": INPATIENT_SERIAL,
            "mobile": MOBILE,
        },
        {
            "signStatus": "1",
            "signToken": SIGN_TOKEN,
            "signDate": "20250901080512",
            "creditPay": "01",
            "insutype": "310",
        },
    ),
    "HOS00003": Example(
        {
            "signToken": SIGN_TOKEN,
            "orderId": PAY_ORDER_ID,
            "amt": 500000,
            **_AT_HOSPITAL,
            "orderType": "2",
            "extParams": '{"socialInsuranceTotal":0,"thirdpartyPayTotal":0}',
            "mdtrtId": "MDTRT2025090100001",
            "setlId": "YJ2025090100001",
        },
        {**_DEPOSIT_1, "amt": 500000, "psnAmt": 500000},
    ),
    "HOS00004": Example(
        {
            "orderId": REFUND_ORDER_ID,
            "origOrderId": PAY_QUERY_ID,
            "amtRefund": 100000,
            **_AT_HOSPITAL,
        },
        # the response's origOrderId is "原支付医院订单号": the payment's hospital orderId
        {
            "orderId": REFUND_ORDER_ID,
            "queryId": REFUND_QUERY_ID,
            "origOrderId": PAY_ORDER_ID,
            "orderTime": "20250905101500",
            "accType": "02",
            "amt": 100000,
            "orderStatus": "12",
            "msg": "退费成功",
        },
    ),
    "HOS00012": Example(
        {"orderId": PAY_ORDER_ID, **_AT_HOSPITAL},
        {
            **_DEPOSIT_1,
            "tradeNo": "T20250901083015000001",
            "orderType": "2",
            "amt": 500000,
            "psnAmt": 500000,
            "msg": "交易成功",
        },
    ),
    "HOS00013": Example(
        {"settleDate": "20250901", **_AT_HOSPITAL},
        {
            "settleDate": "20250901",
            "settleFileUrl": "https://huimin.example.cn/statement/H0000001/20250901.zip",
        },
    ),
}

_SETTLEMENT = {
    "HOST0014": Example(
        {
            "trialId": TRIAL_ID,
            "treatmentSerialNo": INPATIENT_SERIAL,
            "setlId": SETL_ID,
            **_AT_HOSPITAL,
            "origPayQueryId": DEPOSIT_QUERY_IDS,
            "settleAmt": 700000,
            "nonCreditPayAmt": 50000,
        },
        {
            "trialId": TRIAL_ID,
            "supplementAmt": 0,
            "refundAmt": 50000,
            "psnAmt": 600000,
            "budgetAmt": 100000,
        },
    ),
    "HOS00014": Example(
        {
            "trialId": TRIAL_ID,
            "orderId": SETTLE_ORDER_ID,
            "treatmentSerialNo": INPATIENT_SERIAL,
            "setlId": SETL_ID,
            **_AT_HOSPITAL,
            "origPayQueryId": DEPOSIT_QUERY_IDS,
            "settleAmt": 700000,
            "thirdpartyPayTotal": 0,
            "nonCreditPayAmt": 50000,
            "miAmt": 0,
            "budgetAmt": 100000,
            "grAmt": 600000,
        },
        {
            **_SETTLED,
            "psnAmt": 600000,
            "orderList": [{**_DEPOSIT_1, "amt": 500000}, {**_DEPOSIT_2, "amt": 200000}],
        },
    ),
    "HOS00016": Example(
        {
            "orderId": SETTLE_ORDER_ID,
            "treatmentSerialNo": INPATIENT_SERIAL,
            **_AT_HOSPITAL,
            "type": "01",
        },
        # per deposit: what the stay spent of it (amt) and what went back (refundAmt)
        {
            **_SETTLED,
            "orderList": [
                {**_DEPOSIT_1, "amt": 350000, "refundAmt": 50000},
                {**_DEPOSIT_2, "amt": 200000, "refundAmt": 0},
            ],
        },
    ),
}

_ADMITTED = "2025-09-01 08:00:00"
_DISCHARGED = "2025-09-10 10:00:00"

_BED_FEE_DETAIL = {
    "payId": "FD2025091000001",
    "itemNo": "110200001",
    "itemName": "床位费",
    "reimbursementCategory": "1",
    "medicalCatalogCode": "001102000010000",
    "medicalCatalogName": "床位费",
    "priceLimitFlag": "1",
    "priceLimit": "3000",
    "price": "3000",
    "quantity": "9",
    "outOfPocketRatio": "0",
    "total": "27000",
    "diagnosticFee": "0",
    "bedFee": "27000",
}
_BILL_LINE = {
    "payId": "FEE2025091000001",
    "elecSetlCertCode": "44060125",
    "elecSetlCertNo": "0012345678",
    "elecSetlCertChkcode": "a1b2c3",
    "elecSetlCertType": "1",
    "certSetlType": "1",
    "rcptDcType": "D",
    "elecSetlCertFlag": "0",
    "biller": "王五",
    "rechker": "赵六",
    "billAmt": "700000",
    "billDate": "2025-09-10",
    "billTime": "2025-09-10 10:30:00",
    "medSumfee": "700000",
    "hifpPay": "0",
    "othPay": "0",
    "psnAcctPay": "0",
    "psnCashpay": "0",
    "psnSelfpay": "600000",
    "psnOwnpay": "0",
    "begntime": _ADMITTED,
    "endtime": _DISCHARGED,
    "feeOcurTime": "2025-09-01 08:30:00",
    "cnt": "9",
    "pric": "3000",
    "detItemFeeSumamt": "27000",
    "medListCodg": "001102000010000",
    "medicalProject": "床位费",
    "spec": "普通病房",
}

_CLAIMS = {
    "HOS00020": Example(
        {
            "patientId": PATIENT_ID,
            "treatmentSerialNo": INPATIENT_SERIAL,
            "name": PATIENT_NAME,
            "documentsType": "01",
            "documentsNo": ID_NO,
            "treatmentType": "1",
            "treatmentTime": _ADMITTED,
            "dischargeTime": _DISCHARGED,
            "dischargeState": "2",
            "medicalInsuranceType": "310",
            "medicalRecordNo": "JZK0012345",
            "departmentName": "胸外科",
            "doctorName": "李四",
            "prepayment": "600000",
            "total": "700000",
            "medicalInsuranceTotal": "0",
            "selfPaymentTotal": "0",
            "outPocketTotal": "600000",
            "tel": MOBILE,
            "nationality": "中国",
            "birthPlace": "广东清远",
            "address": "广东省清远市清城区新城路1号",
            "drugAllergyFlag": "0",
        },
        {},
    ),
    "HOS00021": Example(
        {
            "patientId": PATIENT_ID,
            "treatmentSerialNo": INPATIENT_SERIAL,
            "hospitalRegSn": INPATIENT_SERIAL,
            "name": PATIENT_NAME,
            "gender": 1,
            "documentsType": 1,
            "documentsNo": ID_NO,
            "admissionTime": _ADMITTED,
            "dischargeTime": _DISCHARGED,
            "departmentName": "胸外科",
            "bedNumber": "12",
            "chiefComplaint": "摔伤致右胸痛3小时",
            "firstDiagnosis": "右侧多发肋骨骨折",
            "otherDiagnoses": "无",
            "treatmentType": 3,
            "doctorName": "李四",
            "admissionStatus": "2",
            "dischargeState": "2",
            "diagnosisList": [
                {
                    "type": "1",
                    "diseaseCode": "S22.401",
                    "diseaseName": "多发性肋骨骨折",
                    "diagnosisTime": "2025-09-01 09:00:00",
                }
            ],
            "operationInfoList": [
                {
                    "surgicalName": "肋骨骨折切开复位内固定术",
                    "surgicalCode": "78.5101",
                    "surgicalStartTime": "2025-09-02 09:00:00",
                    "surgicalEndTime": "2025-09-02 11:30:00",
                }
            ],
        },
        {},
    ),
    "HOS00022": Example(
        {
            "patientId": PATIENT_ID,
            "treatmentSerialNo": INPATIENT_SERIAL,
            "medicalInsuranceType": "310",
            "expenMode": "0040",
            "feeList": [
                {
                    "payId": "FEE2025091000001",
                    "total": "700000",
                    "socialInAmnt": "0",
                    "socialInsuranceTotal": "0",
                    "socialPayAmnt": "0",
                    "thirdpartyPayTotal": "0",
                    "selfAAmnt": "27000",
                    "selfBAmnt": "0",
                    "selfCAmnt": "0",
                    "totalAmount": "600000",
                    "outOfPocketTotal": "0",
                    "feeTime": "2025-09-10 10:30:00",
                    "detailList": [_BED_FEE_DETAIL],
                }
            ],
        },
        {},
    ),
    "HOS00023": Example(
        {
            "treatmentSerialNo": INPATIENT_SERIAL,
            "settleFlag": "Y",
            "settleDate": "2025-09-10",
            "mdtrtType": "2",
            "certno": ID_NO,
            "psnName": PATIENT_NAME,
            "gend": "1",
            "insutype": "310",
            "fixmedinsCode": "H44180200001",
            "fixmedinsName": "清远市人民医院",
            "hospitalLevel": "三级甲等",
            "isInsuranceCovered": "1",
            "hospitalType": "综合医院",
            "fixBlngAdmdvs": "441802",
            "medType": "21",
            "billList": [_BILL_LINE],
        },
        {},
    ),
    "HOS00024": Example(
        {
            "treatmentSerialNo": INPATIENT_SERIAL,
            "reportNo": "CT2025090100012",
            "patientName": PATIENT_NAME,
            "gender": "1",
            "age": "35",
            "imageNo": "IMG2025090100012",
            "department": "放射科",
            "bedNo": "12",
            "admissionNo": INPATIENT_SERIAL,
            "inspectionDate": "2025-09-01",
            "inspectionName": "胸部CT平扫",
            "imagePerformance": "右侧第5、6肋骨骨质连续性中断",
            "diagnosisOpinion": "右侧多发肋骨骨折",
            "reportingDoctor": "周七",
            "reviewingDoctor": "吴八",
            "examinationList": [
                {
                    "reportNo": "CT2025090100012",
                    "imageNo": "IMG2025090100012",
                    "inspectionDate": "2025-09-01 09:20:00",
                    "inspectionName": "胸部CT平扫",
                    "imagePerformance": "右侧第5、6肋骨骨质连续性中断",
                    "diagnosisOpinion": "右侧多发肋骨骨折",
                    "examinationReportDate": "2025-09-01 10:05:00",
                    "reportingDoctor": "周七",
                    "reviewingDoctor": "吴八",
                }
            ],
        },
        {},
    ),
    "HOS00026": Example(dict(_CLAIM_CASE), {}),
    "HOS00027": Example({**_CLAIM_CASE, "status": "1"}, {}),
    "HOS00028": Example(
        {
            **_CLAIM_CASE,
            "fileType": "png",
            "imageBase64": TINY_PNG_BASE64,
            "imageType": "3044",
            "verifyStatus": "3",
        },
        {},
    ),
    "HOS00029": Example(
        {**_CLAIM_CASE, "hospitalId": HOSPITAL_ID},
        {"treatmentSerialNo": INPATIENT_SERIAL, "claimNode": "2", **_INSURER},
    ),
}

_INBOUND = {
    "HIS00002": Example(
        {
            "file": TINY_PDF_BASE64,
            "idNo": ID_NO,
            "insuranceId": INSURANCE_ID,
            "insuranceName": INSURANCE_NAME,
            "treatmentSerialNo": INPATIENT_SERIAL,
            "claimType": "2",
        },
        {"status": "0000", "msg": "接收成功"},
    ),
    "HIS00003": Example(
        {"medStartDate": "20250901", "medEndDate": "20250910", "idNo": ID_NO, "medType": "0040"},
        {
            "treatmentList": [
                {
                    "treatmentSerialNo": INPATIENT_SERIAL,
                    "medDate": "20250901",
                    "medType": "0040",
                    "departmentName": "胸外科",
                    "medName": "多发性肋骨骨折",
                    "mlcd10code": "S22.401",
                }
            ]
        },
    ),
    "HIS00004": Example(
        {**_CLAIM_CASE, "hospitalId": HOSPITAL_ID, "claimNode": "4", **_INSURER},
        {"treatmentSerialNo": INPATIENT_SERIAL},
    ),
}

EXAMPLES: Mapping[str, Example] = MappingProxyType(
    {**_PAYMENT, **_SETTLEMENT, **_CLAIMS, **_INBOUND}
)
