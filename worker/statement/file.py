"""The daily statement file (HOS00013): unzip, parse, and the inverse for simulators.

Downloading it is worker.statement.download; this module does no network I/O.

Format (spec 3.2.10): a zip holding one UTF-8 txt, one order per line, 14 fields separated by
`!|`, each line ending with a trailing `!|`:

    serial!|order!|name!|id!|yyyyMMdd!|HHmmss!|01|02!|fen!|card!|merchant!|mname!|coupon!|
    coupon fen!|insurance fen!|

Decisions (the spec is terse; these are ours):

* The trailing `!|` is optional. The spec's own example lines carry only 13 separators, which
  reads either as 14 fields without the trailing `!|` or as 13 fields (no insurance amount)
  with it; both give the same values, so a line that splits into 14 parts is accepted and its
  last part is the insurance amount (empty -> 0).
* Lengths are counted in characters, not bytes (a 100-byte name would be 33 Chinese
  characters; rejecting a real file over that is worse than accepting a long name).
* Serial, order id, date, time, trade type and amount must be present: reconciliation keys on
  them. Name, id number, card, merchant and coupon fields may be empty (the spec's example has
  an empty merchant name). Amounts are unsigned digits: a refund is type `02` with a positive
  amount; a `-` is rejected rather than guessed at.
* UTF-8 only (an optional BOM is tolerated). GBK is not tried as a fallback: a mis-decoded name
  would reconcile silently wrong, a loud StatementError gets the platform's file fixed.
* Errors never echo a whole line or a personal field's value: lines carry names and id numbers.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import date
from typing import IO, Literal

from worker.errors import StatementError

SEPARATOR = "!|"
FIELD_COUNT = 14
TRADE_PAY: Literal["01"] = "01"
TRADE_REFUND: Literal["02"] = "02"
TradeType = Literal["01", "02"]

DEFAULT_MAX_UNCOMPRESSED_BYTES = 1024 * 1024 * 1024
# The longest legal line is ~500 characters (~2 KB of UTF-8); reading a "line" in bounded
# chunks keeps a file without newlines from being pulled into memory whole.
MAX_LINE_BYTES = 8192

ZipSource = str | os.PathLike[str] | IO[bytes]

_DATE = re.compile(r"[0-9]{8}")
_TIME = re.compile(r"(?:[01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]")
_AMOUNT = re.compile(r"[0-9]{1,11}")
_OPTIONAL_AMOUNT = re.compile(r"[0-9]{0,11}")

# (attribute, position, min length, max length, personal data?) for the free-text fields.
_TEXT_FIELDS: tuple[tuple[str, int, int, int, bool], ...] = (
    ("platform_serial", 1, 8, 40, False),
    ("order_id", 2, 8, 40, False),
    ("name", 3, 0, 100, True),
    ("id_no", 4, 0, 32, True),
    ("card_no", 9, 0, 50, True),
    ("merchant_no", 10, 0, 32, False),
    ("merchant_name", 11, 0, 50, False),
    ("coupon_info", 12, 0, 100, False),
)


@dataclass(frozen=True, repr=False)
class StatementRow:
    """One order line. Amounts are integers in fen; personal fields arrive masked already."""

    platform_serial: str
    order_id: str
    name: str
    id_no: str
    pay_date: str  # yyyyMMdd
    pay_time: str  # HHmmss
    trade_type: TradeType
    amount: int
    card_no: str
    merchant_no: str
    merchant_name: str
    coupon_info: str
    coupon_amount: int
    insurance_amount: int
    line_number: int = 0  # 1-based line in the file; 0 for rows built in code

    def __repr__(self) -> str:
        # Rows end up in logs and assertion messages: never print a full name there.
        masked = self.name[:1] + "**" if self.name else ""
        shown = (
            f"{f.name}={masked if f.name == 'name' else getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"StatementRow({', '.join(shown)})"


@dataclass(frozen=True)
class StatementSummary:
    """Counts and fen totals by trade type, for reconciliation reports."""

    pay_count: int = 0
    pay_total: int = 0
    refund_count: int = 0
    refund_total: int = 0
    coupon_total: int = 0
    insurance_total: int = 0

    @property
    def count(self) -> int:
        return self.pay_count + self.refund_count

    @property
    def net_total(self) -> int:
        return self.pay_total - self.refund_total


# --------------------------------------------------------------------------- parsing


def parse_line(line: str, line_number: int) -> StatementRow:
    """Parse one non-blank line (line terminator already removed); StatementError if malformed."""
    parts = line.split(SEPARATOR)
    if len(parts) == FIELD_COUNT + 1 and parts[-1] == "":
        parts.pop()  # the trailing `!|`
    if len(parts) != FIELD_COUNT:
        raise StatementError(
            f"expected {FIELD_COUNT} fields separated by {SEPARATOR!r}, found {len(parts)}",
            line_number,
        )
    text = {
        name: _text(parts[pos - 1], name, pos, lo, hi, pii, line_number)
        for name, pos, lo, hi, pii in _TEXT_FIELDS
    }
    return StatementRow(
        **text,
        pay_date=_pay_date(parts[4], line_number),
        pay_time=_match(_TIME, parts[5], "pay_time", 6, "HHmmss", line_number),
        trade_type=_trade_type(parts[6], line_number),
        amount=int(_match(_AMOUNT, parts[7], "amount", 8, "1-11 digits (fen)", line_number)),
        coupon_amount=_optional_amount(parts[12], "coupon_amount", 13, line_number),
        insurance_amount=_optional_amount(parts[13], "insurance_amount", 14, line_number),
        line_number=line_number,
    )


def parse_lines(lines: Iterable[str], *, start_line: int = 1) -> Iterator[StatementRow]:
    """Yield a row per non-blank line, lazily; line numbers count blank lines too.

    Line terminators (`\\n`, `\\r\\n`) are stripped and a UTF-8 BOM on the first line is
    tolerated. Any other malformed line raises StatementError naming its line; rows before it
    have already been yielded, nothing is ever skipped silently.
    """
    for offset, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        if offset == 0:
            line = line.removeprefix("\ufeff")
        if line.strip():
            yield parse_line(line, start_line + offset)


def _error(name: str, position: int, problem: str, line_number: int) -> StatementError:
    return StatementError(f"field {position} ({name}): {problem}", line_number)


def _text(
    value: str, name: str, position: int, lo: int, hi: int, pii: bool, line_number: int
) -> str:
    if lo <= len(value) <= hi:
        return value
    shown = "" if pii else f" {value[:50]!r}"
    bounds = f"at most {hi}" if lo == 0 else f"{lo}-{hi}"
    raise _error(
        name, position, f"length {len(value)}, expected {bounds} characters{shown}", line_number
    )


def _match(
    pattern: re.Pattern[str], value: str, name: str, position: int, expected: str, line_number: int
) -> str:
    if pattern.fullmatch(value) is None:
        raise _error(name, position, f"{value[:20]!r} is not {expected}", line_number)
    return value


def _pay_date(value: str, line_number: int) -> str:
    _match(_DATE, value, "pay_date", 5, "yyyyMMdd", line_number)
    try:
        date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise _error("pay_date", 5, f"{value!r} is not a calendar date", line_number) from None
    return value


def _trade_type(value: str, line_number: int) -> TradeType:
    if value == TRADE_PAY:
        return TRADE_PAY
    if value == TRADE_REFUND:
        return TRADE_REFUND
    raise _error("trade_type", 7, f"{value[:20]!r} is not 01 (pay) or 02 (refund)", line_number)


def _optional_amount(value: str, name: str, position: int, line_number: int) -> int:
    _match(_OPTIONAL_AMOUNT, value, name, position, "empty or 1-11 digits (fen)", line_number)
    return int(value) if value else 0


# --------------------------------------------------------------------------- zip reading


def iter_zip_rows(
    source: ZipSource, *, max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES
) -> Iterator[StatementRow]:
    """Stream the rows of a statement zip (a path or a binary file object).

    Exactly one `.txt` member is expected (other members are ignored). Raises StatementError,
    lazily on the first `next()`, for a corrupt or encrypted zip, zero or several txt members,
    an uncompressed size above `max_uncompressed_bytes` (a zip bomb guard: both the declared
    size and the bytes actually inflated are checked), non-UTF-8 text (GBK is deliberately not
    accepted), or a malformed line. Memory stays bounded by one line, whatever the file size.
    """
    try:
        with zipfile.ZipFile(source) as archive:
            member = _single_txt(archive)
            if member.file_size > max_uncompressed_bytes:
                raise StatementError(
                    f"{member.filename!r} inflates to {member.file_size} bytes, "
                    f"over the {max_uncompressed_bytes}-byte limit"
                )
            with archive.open(member) as stream:
                yield from parse_lines(_decoded_lines(stream, max_uncompressed_bytes))
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise StatementError(f"corrupt statement zip: {type(exc).__name__}: {exc}") from exc
    except RuntimeError as exc:  # zipfile's "File ... is encrypted, password required"
        raise StatementError(f"unreadable statement zip: {exc}") from exc


def _single_txt(archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    texts = [
        info
        for info in archive.infolist()
        if not info.is_dir() and info.filename.lower().endswith(".txt")
    ]
    if len(texts) != 1:
        names = [info.filename for info in texts]
        raise StatementError(f"expected exactly one .txt in the statement zip, found {names}")
    return texts[0]


def _decoded_lines(stream: IO[bytes], max_bytes: int) -> Iterator[str]:
    # Lines are split as bytes and decoded one by one (rather than through io.TextIOWrapper)
    # so that a bad byte is reported with its exact line number, not a chunk's.
    total = 0
    for line_number, raw in enumerate(_bounded_lines(stream), start=1):
        total += len(raw)
        if total > max_bytes:  # the member lied about its size in the zip directory
            raise StatementError(f"statement text exceeds the {max_bytes}-byte limit", line_number)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StatementError(
                f"not UTF-8 (byte {exc.start} of the line); GBK is not accepted", line_number
            ) from None


def _bounded_lines(stream: IO[bytes]) -> Iterator[bytes]:
    line_number = 0
    while raw := stream.readline(MAX_LINE_BYTES + 1):
        line_number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise StatementError(f"line longer than {MAX_LINE_BYTES} bytes", line_number)
        yield raw


# --------------------------------------------------------------------------- writing


def format_row(row: StatementRow) -> str:
    """The spec's line for `row` (with trailing `!|`, without line end).

    Raises ValueError if the row could not be read back identically (a field holding `!|` or a
    line break, a bad length or value): the writer never produces a file the reader rejects.
    """
    values = (
        row.platform_serial,
        row.order_id,
        row.name,
        row.id_no,
        row.pay_date,
        row.pay_time,
        row.trade_type,
        str(row.amount),
        row.card_no,
        row.merchant_no,
        row.merchant_name,
        row.coupon_info,
        str(row.coupon_amount),
        str(row.insurance_amount),
    )
    line = SEPARATOR.join(values) + SEPARATOR
    if "\n" in line or "\r" in line:
        raise ValueError(f"row at line {row.line_number} has a line break inside a field")
    try:
        parsed = parse_line(line, row.line_number)
    except StatementError as exc:
        raise ValueError(f"row cannot be written as a statement line: {exc}") from exc
    if parsed != row:
        raise ValueError(
            f"row at line {row.line_number} does not survive a round trip "
            f"(a field contains {SEPARATOR!r}?)"
        )
    return line


def write_statement_zip(
    rows_or_lines: Iterable[StatementRow | str],
    path: str | os.PathLike[str] | IO[bytes],
    *,
    member_name: str = "statement.txt",
) -> None:
    """Write a spec-format zip: one UTF-8 txt, `\\n` line ends, streamed (not built in memory).

    A StatementRow goes through `format_row`; a str is written verbatim (plus `\\n` unless it
    already ends with one), so tests and the simulator can also produce malformed files.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(member_name, "w", force_zip64=True) as raw:
            with io.TextIOWrapper(raw, encoding="utf-8", newline="") as out:
                for item in rows_or_lines:
                    line = format_row(item) if isinstance(item, StatementRow) else item
                    out.write(line if line.endswith("\n") else line + "\n")


# --------------------------------------------------------------------------- reporting


def summarise(rows: Iterable[StatementRow]) -> StatementSummary:
    """Counts and totals by trade type; consumes `rows` once without keeping them."""
    counts = {TRADE_PAY: 0, TRADE_REFUND: 0}
    totals = {TRADE_PAY: 0, TRADE_REFUND: 0}
    coupon = insurance = 0
    for row in rows:
        counts[row.trade_type] += 1
        totals[row.trade_type] += row.amount
        coupon += row.coupon_amount
        insurance += row.insurance_amount
    return StatementSummary(
        pay_count=counts[TRADE_PAY],
        pay_total=totals[TRADE_PAY],
        refund_count=counts[TRADE_REFUND],
        refund_total=totals[TRADE_REFUND],
        coupon_total=coupon,
        insurance_total=insurance,
    )
