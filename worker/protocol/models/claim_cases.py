"""Commercial-insurance claim cases: spec 3.2.16 - 3.2.19 (the uploads are in claims.py).

Images go up with HOS00028; the case is submitted (HOS00027) or cancelled (HOS00026) and
followed with HOS00029, the only one of these with a response table of its own.
"""

from __future__ import annotations

from typing import Annotated

from worker.protocol.models.base import (
    Base64Text,
    HospitalId,
    HospitalMessage,
    Opt,
    PlatformMessage,
    SerialNo,
    must_match,
    up_to,
)
from worker.protocol.models.claims import IdNo18, Text64

# --- 3.2.16 HOS00026 案件撤销, 3.2.17 HOS00027 保险理赔 ---------------------------------
# --- 3.2.16 HOS00026 案件撤销, 3.2.17 HOS00027 保险理赔 ---------------------------------
# --- 3.2.16 HOS00026 案件撤销, 3.2.17 HOS00027 保险理赔 ---------------------------------
# --- 3.2.16 HOS00026 案件撤销, 3.2.17 HOS00027 保险理赔 ---------------------------------
from worker.protocol.models.enums import ClaimNode, ClaimType, ImageType, UploadStatus, VerifyStatus

# --- 3.2.16 HOS00026 案件撤销, 3.2.17 HOS00027 保险理赔 ---------------------------------


class CancelClaimRequest(HospitalMessage):
    treatmentSerialNo: SerialNo
    idNo: IdNo18


class SubmitClaimRequest(HospitalMessage):
    treatmentSerialNo: SerialNo
    idNo: IdNo18
    status: UploadStatus


# --- 3.2.18 HOS00028 影像上传 -----------------------------------------------------------


class ImageUploadRequest(HospitalMessage):
    treatmentSerialNo: SerialNo
    idNo: IdNo18
    fileType: Annotated[str, up_to(3), must_match("(?i)jpg|png|pdf", "jpg, png or pdf")]
    imageBase64: Base64Text  # the spec's length 2000 cannot hold a 3 MB image: not enforced
    imageType: ImageType
    verifyStatus: VerifyStatus
    branchNo: Opt[Annotated[str, up_to(1)]] = None
    clerkNo: Opt[Annotated[str, up_to(1)]] = None
    sysSource: Opt[Annotated[str, up_to(1)]] = None
    acceptChannel: Opt[Annotated[str, up_to(1)]] = None


# --- 3.2.19 HOS00029 查询案件状态 -------------------------------------------------------


class ClaimStatusRequest(HospitalMessage):
    treatmentSerialNo: SerialNo
    idNo: IdNo18
    hospitalId: HospitalId


class ClaimStatusResponse(PlatformMessage):
    treatmentSerialNo: SerialNo
    claimNode: ClaimNode
    insuranceId: Annotated[str, up_to(8)]
    insuranceName: Text64  # spec: 8, too short for insurers' names
    claimType: ClaimType
