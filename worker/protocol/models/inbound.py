"""Calls the platform makes to the hospital: spec 3.1.2 - 3.1.4.

Here the roles swap: the platform produces the request (so it is a `PlatformMessage`,
tolerant of added fields) and the hospital produces the response (a `HospitalMessage`,
strict). 3.1.1 (insurance enrolment query) was abolished in v2.7 and has no model.
"""

from __future__ import annotations

from typing import Annotated

from worker.protocol.models.base import (
    CompactDate,
    HospitalId,
    HospitalMessage,
    NonEmpty,
    Opt,
    PlatformMessage,
    SerialNo,
    up_to,
)
from worker.protocol.models.enums import ClaimNode, ClaimType, VisitType

InsuranceId = Annotated[str, up_to(8)]
#: the spec says 8, but insurers' names run longer (中国人民财产保险股份有限公司: 14)
InsuranceName = Annotated[str, up_to(64)]


# --- 3.1.2 HIS00002 授权书接收 ----------------------------------------------------------


class AuthorisationLetterRequest(PlatformMessage):
    file: NonEmpty  # base64 authorisation letter: up to ~4 MB, no length enforced
    idNo: Annotated[str, up_to(32)]
    insuranceId: InsuranceId
    insuranceName: InsuranceName
    treatmentSerialNo: SerialNo
    claimType: ClaimType


class AuthorisationLetterResponse(HospitalMessage):
    # the spec gives neither type nor length nor codes for these two
    status: Opt[NonEmpty] = None
    msg: Opt[NonEmpty] = None


# --- 3.1.3 HIS00003 就诊记录获取 --------------------------------------------------------


class VisitRecordsRequest(PlatformMessage):
    medStartDate: CompactDate  # the spec's "yyyyHHdd" is a slip for yyyyMMdd
    medEndDate: CompactDate
    idNo: Annotated[str, up_to(32)]
    medType: VisitType


class Visit(HospitalMessage):
    """A treatmentList item."""

    treatmentSerialNo: SerialNo
    medDate: CompactDate  # 就诊日期, length 8: the request's yyyyMMdd
    medType: VisitType  # length 2 in the spec, but the codes are 0020/0030/0040
    departmentName: Annotated[str, up_to(64)]
    medName: Annotated[str, up_to(128)]  # 诊断名称
    mlcd10code: Opt[Annotated[str, up_to(100)]] = None  # 主诊断代码


class VisitRecordsResponse(HospitalMessage):
    treatmentList: list[Visit]  # present, possibly empty: no visits in the range


# --- 3.1.4 HIS00004 申报/救助费用申请结果通知 -------------------------------------------


class ClaimResultRequest(PlatformMessage):
    treatmentSerialNo: SerialNo
    idNo: Annotated[str, up_to(18)]
    hospitalId: HospitalId
    claimNode: ClaimNode
    insuranceId: InsuranceId
    insuranceName: InsuranceName
    claimType: ClaimType


class ClaimResultResponse(HospitalMessage):
    treatmentSerialNo: SerialNo  # echoes the notification's
