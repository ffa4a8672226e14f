"""The simulated insurer's claim cases (spec 3.2.11 - 3.2.19): uploads, submit, cancel, status.

Apart from state.py because claims share nothing with the money rules: a case is keyed by
treatmentSerialNo, moves through claim nodes, and never touches an order. PlatformState owns
one `ClaimCases`, routes the claim transCodes to it and holds the lock around every call.

Rules (recorded in docs/simulator.md): uploads are accepted while the case is at node 1 or 2
and bring it to the node in UPLOAD_NODES; submitting (status "1") needs node 2 and moves the
case to 3; cancelling sets 9 unless the insurer has already settled it (4, 11, 12).
"""

from __future__ import annotations

from collections.abc import Callable

from worker.sandbox.simulator.records import Business, ClaimCase, Insurer, Reply, failure, ok

#: claim uploads and the claimNode each one brings the case to (spec appendix 保险节点)
UPLOAD_NODES = {
    "HOS00020": "1",
    "HOS00021": "1",
    "HOS00022": "2",
    "HOS00023": "2",
    "HOS00024": "1",
    "HOS00028": "1",
}
_OPEN_NODES = ("1", "2")  # uploads are accepted until the claim is submitted

Handler = Callable[[Business, str], Reply]


class ClaimCases:
    """Every claim case the simulated insurer knows, by treatmentSerialNo. Not locked itself:
    its owner (PlatformState) serialises the calls."""

    def __init__(self, insurer: Insurer) -> None:
        self.insurer = insurer
        self.cases: dict[str, ClaimCase] = {}

    def reset(self) -> None:
        self.cases = {}

    def handlers(self) -> dict[str, Handler]:
        """The claim transCodes and their handlers, for PlatformState's dispatch table."""
        handlers: dict[str, Handler] = {
            "HOS00026": self._cancel_case,
            "HOS00027": self._submit_case,
            "HOS00029": self._case_status,
        }
        for code in UPLOAD_NODES:
            handlers[code] = self._upload_for(code)
        return handlers

    def set_case_node(self, serial: str, node: str) -> ClaimCase:
        """The insurer's side moves a case on (e.g. to 4, settled): an admin action."""
        case = self.cases.setdefault(serial, ClaimCase(serial))
        case.node = node
        return case

    def _upload_for(self, trans_code: str) -> Handler:
        def upload(req: Business, base_url: str) -> Reply:
            serial = req["treatmentSerialNo"]
            case = self.cases.setdefault(serial, ClaimCase(serial))
            if case.node not in _OPEN_NODES:
                return failure(f"案件当前环节{case.node}不接受资料上传")
            case.uploads[trans_code] += 1
            case.node = max(case.node, UPLOAD_NODES[trans_code], key=int)
            case.id_no = (
                req.get("idNo") or req.get("documentsNo") or req.get("certno") or case.id_no
            )
            return ok()

        return upload

    def _submit_case(self, req: Business, base_url: str) -> Reply:
        case = self.cases.get(req["treatmentSerialNo"])
        if case is None or case.node == "9":
            return failure("案件不存在或已撤销")
        if req["status"] != "1" or case.submitted:
            return ok()  # "2" = uploads not finished: noted, nothing moves
        if case.node != "2":
            return failure("费用信息未上传，不能申请理赔")
        case.submitted, case.node = True, "3"
        return ok()

    def _cancel_case(self, req: Business, base_url: str) -> Reply:
        case = self.cases.get(req["treatmentSerialNo"])
        if case is None:
            return failure("案件不存在")
        if case.node in ("4", "11", "12"):
            return failure("案件已结算，不能撤销")
        case.node = "9"
        return ok()

    def _case_status(self, req: Business, base_url: str) -> Reply:
        case = self.cases.get(req["treatmentSerialNo"])
        insurer = self.insurer
        return ok(
            {
                "treatmentSerialNo": req["treatmentSerialNo"],
                "claimNode": "0" if case is None else case.node,
                "insuranceId": insurer.insurance_id,
                "insuranceName": insurer.insurance_name,
                "claimType": insurer.claim_type,
            }
        )
