"""The statement file (HOS00013): parsing, the zip container, the download, the writer."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.errors import PlatformUnavailable, StatementError
from worker.statement.download import download_statement
from worker.statement.file import (
    StatementRow,
    StatementSummary,
    format_row,
    iter_zip_rows,
    parse_line,
    parse_lines,
    summarise,
    write_statement_zip,
)

# The spec's two "real" lines, verbatim (13 separators: see the module docstring).
SPEC_LINE_1 = (
    "0000000010118724!|212382923833!|张三!|4209******272472!|20220804!|165056!|01!|"
    "9547!|62282******59569!|hos00001!|!|!|0!|"
)
SPEC_LINE_2 = (
    "0000000010120178!|213444321333!|李四!|42092*****272472!|20220804!|170854!|01!|"
    "11227!|62282****59569!|hos00001!|!|!|0!|"
)

ROW_1 = StatementRow(
    platform_serial="0000000010118724",
    order_id="212382923833",
    name="张三",
    id_no="4209******272472",
    pay_date="20220804",
    pay_time="165056",
    trade_type="01",
    amount=9547,
    card_no="62282******59569",
    merchant_no="hos00001",
    merchant_name="",
    coupon_info="",
    coupon_amount=0,
    insurance_amount=0,
    line_number=1,
)
ROW_2 = StatementRow(
    platform_serial="0000000010120178",
    order_id="213444321333",
    name="李四",
    id_no="42092*****272472",
    pay_date="20220804",
    pay_time="170854",
    trade_type="01",
    amount=11227,
    card_no="62282****59569",
    merchant_no="hos00001",
    merchant_name="",
    coupon_info="",
    coupon_amount=0,
    insurance_amount=0,
    line_number=2,
)

# A valid 14-field line with the trailing separator, split for targeted corruption.
GOOD_FIELDS = [
    "0000000010118724",
    "212382923833",
    "王小明",
    "4209******272472",
    "20220804",
    "165056",
    "02",
    "500",
    "62282******59569",
    "hos00001",
    "惠民医院",
    "满减",
    "100",
    "250",
]


def line_with(**changes: str) -> str:
    index = {
        "amount": 7,
        "trade_type": 6,
        "pay_date": 4,
        "pay_time": 5,
        "order_id": 1,
        "coupon_amount": 12,
        "name": 2,
    }
    fields = list(GOOD_FIELDS)
    for name, value in changes.items():
        fields[index[name]] = value
    return "!|".join(fields) + "!|"


def make_row(i: int, trade_type: str = "01") -> StatementRow:
    return StatementRow(
        platform_serial=f"{i:016d}",
        order_id=f"ORD{i:09d}",
        name="张三丰",
        id_no="4209******2724",
        pay_date="20240101",
        pay_time="120000",
        trade_type=trade_type,  # type: ignore[arg-type]
        amount=100 + i,
        card_no="6228****5959",
        merchant_no="hos00001",
        merchant_name="医院",
        coupon_info="",
        coupon_amount=0,
        insurance_amount=0,
        line_number=i,
    )


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# --------------------------------------------------------------------------- parsing


def test_spec_example_lines_parse() -> None:
    assert list(parse_lines([SPEC_LINE_1 + "\n", SPEC_LINE_2 + "\n"])) == [ROW_1, ROW_2]


def test_full_fourteen_field_line_with_trailing_separator() -> None:
    row = parse_line(line_with(), 7)
    assert (row.trade_type, row.amount, row.coupon_amount, row.insurance_amount) == (
        "02",
        500,
        100,
        250,
    )
    assert (row.merchant_name, row.coupon_info, row.line_number) == ("惠民医院", "满减", 7)


def test_trailing_separator_is_optional() -> None:
    without = "!|".join(GOOD_FIELDS)
    assert parse_line(without, 1) == parse_line(without + "!|", 1)


def test_blank_lines_crlf_and_bom_are_tolerated() -> None:
    lines = ["\ufeff" + SPEC_LINE_1 + "\r\n", "\r\n", "   \n", SPEC_LINE_2 + "\r\n", ""]
    rows = list(parse_lines(lines))
    assert [r.order_id for r in rows] == ["212382923833", "213444321333"]
    assert [r.line_number for r in rows] == [1, 4]


def test_start_line_offsets_line_numbers() -> None:
    with pytest.raises(StatementError) as info:
        list(parse_lines([SPEC_LINE_1, "garbage"], start_line=100))
    assert info.value.line_number == 101


def test_repr_masks_the_name() -> None:
    text = repr(ROW_1) + str(ROW_1)
    assert "张三" not in text and "张**" in text
    assert "212382923833" in text


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (SPEC_LINE_1.replace("!|hos00001", ""), ["field"]),  # 13 fields + trailing -> 13 parts
        (line_with() + "extra", ["found 15"]),
        ("just some text", ["fields"]),
        (line_with(amount="95.47"), ["amount", "field 8"]),
        (line_with(amount="-500"), ["amount"]),
        (line_with(amount=""), ["amount"]),
        (line_with(amount="123456789012"), ["amount"]),
        (line_with(amount="٣"), ["amount"]),  # a non-ASCII digit is not a digit here
        (line_with(coupon_amount="x"), ["coupon_amount"]),
        (line_with(trade_type="03"), ["trade_type", "03"]),
        (line_with(pay_date="2022084"), ["pay_date"]),
        (line_with(pay_date="20220231"), ["pay_date", "calendar"]),
        (line_with(pay_time="246000"), ["pay_time"]),
        (line_with(order_id="short"), ["order_id", "8-40"]),
        (line_with(name="张" * 101), ["name", "at most 100"]),
    ],
)
def test_malformed_line_names_line_and_field(line: str, words: list[str]) -> None:
    with pytest.raises(StatementError) as info:
        list(parse_lines([SPEC_LINE_1, "", line, SPEC_LINE_2]))
    assert info.value.line_number == 3
    message = str(info.value)
    assert message.startswith("line 3: ")
    for word in words:
        assert word in message


def test_errors_do_not_echo_personal_fields() -> None:
    with pytest.raises(StatementError) as info:
        parse_line(line_with(name="欧阳" * 60), 1)
    assert "欧阳" not in str(info.value)


def test_malformed_line_in_the_middle_of_a_large_file() -> None:
    lines = (
        format_row(make_row(i)) if i != 5000 else line_with(amount="12a") for i in range(1, 10_001)
    )
    seen: list[int] = []
    with pytest.raises(StatementError) as info:
        for row in parse_lines(lines):
            seen.append(row.line_number)
    assert info.value.line_number == 5000
    assert seen == list(range(1, 5000))


# --------------------------------------------------------------------------- round trips

_PRINTABLE = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")
_CHINESE = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5)


def _text(max_size: int) -> st.SearchStrategy[str]:
    # Free text, including `!` and `|` on their own, but never the separator itself.
    return st.text(st.one_of(_PRINTABLE, _CHINESE), max_size=max_size).filter(
        lambda s: "!|" not in s
    )


_KEY = st.text(st.sampled_from("0123456789ABCDEFabcdef-_"), min_size=8, max_size=40)
_AMOUNT = st.integers(min_value=0, max_value=99_999_999_999)

rows = st.builds(
    StatementRow,
    platform_serial=_KEY,
    order_id=_KEY,
    name=st.one_of(st.text(_CHINESE, min_size=1, max_size=4), _text(100)),
    id_no=_text(32),
    pay_date=st.dates().map(lambda d: f"{d.year:04d}{d.month:02d}{d.day:02d}"),
    pay_time=st.times().map(lambda t: t.strftime("%H%M%S")),
    trade_type=st.sampled_from(["01", "02"]),
    amount=_AMOUNT,
    card_no=_text(50),
    merchant_no=_text(32),
    merchant_name=_text(50),
    coupon_info=st.one_of(st.just(""), _text(100)),
    coupon_amount=st.one_of(st.just(0), _AMOUNT),
    insurance_amount=st.one_of(st.just(0), _AMOUNT),
    line_number=st.just(1),
)


@given(rows)
def test_format_then_parse_round_trips(row: StatementRow) -> None:
    assert parse_line(format_row(row), 1) == row


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows, max_size=20))
def test_zip_round_trip(generated: list[StatementRow]) -> None:
    numbered = [
        StatementRow(**{**vars(r), "line_number": i}) for i, r in enumerate(generated, start=1)
    ]
    buffer = io.BytesIO()
    write_statement_zip(numbered, buffer)
    buffer.seek(0)
    assert list(iter_zip_rows(buffer)) == numbered


def test_empty_coupon_fields_read_as_zero() -> None:
    row = parse_line(line_with(coupon_amount="").replace("!|250!|", "!|!|"), 1)
    assert (row.coupon_amount, row.insurance_amount) == (0, 0)


@pytest.mark.parametrize("bad", ["a!|b", "a\nb", "a\rb"])
def test_format_row_refuses_unrepresentable_rows(bad: str) -> None:
    with pytest.raises(ValueError):
        format_row(StatementRow(**{**vars(ROW_1), "name": bad}))


def test_format_row_refuses_invalid_values() -> None:
    with pytest.raises(ValueError):
        format_row(StatementRow(**{**vars(ROW_1), "amount": -1}))


def test_written_file_is_spec_format(tmp_path: Path) -> None:
    path = tmp_path / "s.zip"
    write_statement_zip([ROW_1, ROW_2], path)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["statement.txt"]
        text = archive.read("statement.txt").decode("utf-8")
    assert text == SPEC_LINE_1 + "0!|\n" + SPEC_LINE_2 + "0!|\n"


# --------------------------------------------------------------------------- zip container


def test_reads_the_spec_lines_from_a_zip_path(tmp_path: Path) -> None:
    path = tmp_path / "20220804.zip"
    path.write_bytes(zip_bytes({"20220804.txt": f"{SPEC_LINE_1}\r\n{SPEC_LINE_2}\r\n".encode()}))
    assert list(iter_zip_rows(path)) == [ROW_1, ROW_2]


def test_bom_and_ignored_non_txt_members() -> None:
    data = zip_bytes({"readme.md": b"x", "s.TXT": ("\ufeff" + SPEC_LINE_1).encode()})
    assert list(iter_zip_rows(io.BytesIO(data))) == [ROW_1]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (zip_bytes({}), "exactly one .txt"),
        (zip_bytes({"a.csv": b"x"}), "exactly one .txt"),
        (zip_bytes({"a.txt": b"", "b.txt": b""}), "exactly one .txt"),
        (b"PK\x03\x04 this is not a zip", "corrupt"),
        (b"", "corrupt"),
    ],
)
def test_bad_containers(data: bytes, words: str) -> None:
    with pytest.raises(StatementError, match=words):
        list(iter_zip_rows(io.BytesIO(data)))


def test_corrupt_compressed_data() -> None:
    data = bytearray(zip_bytes({"s.txt": (SPEC_LINE_1 + "\n").encode() * 200}))
    start = 30 + len("s.txt")  # local header, then the deflate stream
    data[start : start + 40] = bytes(40)
    with pytest.raises(StatementError, match="corrupt"):
        list(iter_zip_rows(io.BytesIO(bytes(data))))


def test_non_utf8_text_names_the_line() -> None:
    gbk = SPEC_LINE_2.encode("gbk")
    data = zip_bytes({"s.txt": (SPEC_LINE_1 + "\n").encode() + gbk + b"\n"})
    with pytest.raises(StatementError, match="UTF-8") as info:
        list(iter_zip_rows(io.BytesIO(data)))
    assert info.value.line_number == 2


def test_uncompressed_size_limit_refuses_a_bomb() -> None:
    data = zip_bytes({"bomb.txt": b"\n" * 10_000_000})  # ~10 KB compressed
    assert len(data) < 100_000
    with pytest.raises(StatementError, match="limit"):
        list(iter_zip_rows(io.BytesIO(data), max_uncompressed_bytes=1_000_000))


def test_line_without_end_is_not_read_whole() -> None:
    data = zip_bytes({"s.txt": b"x" * 1_000_000})
    with pytest.raises(StatementError, match="longer than") as info:
        list(iter_zip_rows(io.BytesIO(data)))
    assert info.value.line_number == 1


@pytest.mark.slow
def test_streaming_keeps_memory_bounded(tmp_path: Path) -> None:
    count = 200_000
    path = tmp_path / "big.zip"
    # Raw lines (not rows) keep the writing side cheap; the reading side is under test.
    template = format_row(make_row(1)).replace("0000000000000001", "{:016d}", 1)
    write_statement_zip(
        (
            template.format(i).replace("!|01!|", "!|02!|") if i % 10 == 0 else template.format(i)
            for i in range(1, count + 1)
        ),
        path,
    )
    tracemalloc.start()
    try:
        summary = summarise(iter_zip_rows(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.count == count
    assert summary.refund_count == count // 10
    assert peak < 20 * 1024 * 1024, f"peak {peak} bytes: the file was not streamed"


# --------------------------------------------------------------------------- summary


def test_summarise_by_trade_type() -> None:
    rows_ = [make_row(1), make_row(2, "02"), make_row(3)]
    rows_[0] = StatementRow(**{**vars(rows_[0]), "coupon_amount": 5, "insurance_amount": 7})
    assert summarise(rows_) == StatementSummary(
        pay_count=2,
        pay_total=101 + 103,
        refund_count=1,
        refund_total=102,
        coupon_total=5,
        insurance_total=7,
    )
    assert summarise([]).count == 0
    assert summarise(rows_).net_total == 101 + 103 - 102


# --------------------------------------------------------------------------- download

URL = "https://platform.example/settle/20240101.zip?token=SECRET"


def client_for(handler: httpx.MockTransport) -> httpx.Client:
    return httpx.Client(transport=handler)


def test_download_saves_the_file(tmp_path: Path) -> None:
    body = zip_bytes({"s.txt": SPEC_LINE_1.encode()})
    client = client_for(httpx.MockTransport(lambda request: httpx.Response(200, content=body)))
    dest = tmp_path / "sub" / "20240101.zip"
    assert download_statement(URL, dest, client=client) == dest
    assert dest.read_bytes() == body
    assert list(iter_zip_rows(dest)) == [ROW_1]
    assert list(dest.parent.iterdir()) == [dest]


def test_download_follows_a_redirect(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "platform.example":
            return httpx.Response(302, headers={"location": "https://oss.example/f.zip"})
        return httpx.Response(200, content=b"zip")

    dest = tmp_path / "f.zip"
    download_statement(URL, dest, client=client_for(httpx.MockTransport(handler)))
    assert dest.read_bytes() == b"zip"


@pytest.mark.parametrize("status", [404, 500, 503])
def test_download_http_error_is_retry_later(tmp_path: Path, status: int) -> None:
    client = client_for(httpx.MockTransport(lambda request: httpx.Response(status)))
    with pytest.raises(PlatformUnavailable, match=str(status)) as info:
        download_statement(URL, tmp_path / "f.zip", client=client)
    assert "SECRET" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("closed")],
)
def test_download_transport_error_is_retry_later(tmp_path: Path, error: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(PlatformUnavailable) as info:
        download_statement(URL, tmp_path / "f.zip", client=client_for(httpx.MockTransport(handler)))
    assert isinstance(info.value.__cause__, httpx.HTTPError)
    assert list(tmp_path.iterdir()) == []


def test_download_error_mid_body_leaves_nothing(tmp_path: Path) -> None:
    def body() -> Iterator[bytes]:
        yield b"x" * 1000
        raise httpx.ReadError("reset")

    client = client_for(httpx.MockTransport(lambda request: httpx.Response(200, content=body())))
    with pytest.raises(PlatformUnavailable):
        download_statement(URL, tmp_path / "f.zip", client=client)
    assert list(tmp_path.iterdir()) == []


def test_download_invalid_url_is_converted(tmp_path: Path) -> None:
    client = client_for(httpx.MockTransport(lambda request: httpx.Response(200)))
    with pytest.raises(PlatformUnavailable) as info:
        download_statement(
            "https://platform.example:port/f.zip?token=SECRET", tmp_path / "f.zip", client=client
        )
    assert "SECRET" not in str(info.value)


def test_download_over_the_limit_is_a_statement_error(tmp_path: Path) -> None:
    # Streamed without a Content-Length: the limit is enforced while reading.
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1000

    client = client_for(httpx.MockTransport(lambda request: httpx.Response(200, content=chunks())))
    with pytest.raises(StatementError, match="limit"):
        download_statement(URL, tmp_path / "f.zip", client=client, max_bytes=10_000)
    assert list(tmp_path.iterdir()) == []


def test_download_declared_length_over_the_limit(tmp_path: Path) -> None:
    client = client_for(
        httpx.MockTransport(lambda request: httpx.Response(200, content=b"x" * 20_000))
    )
    with pytest.raises(StatementError, match="limit"):
        download_statement(URL, tmp_path / "f.zip", client=client, max_bytes=10_000)
