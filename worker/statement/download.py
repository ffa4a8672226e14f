"""Fetching the daily statement file (HOS00013) from the platform's settleFileUrl.

Kept apart from the file format (worker.statement.file) because it is the one part that does
network I/O: the format is pure and shared with the simulator, which writes statements but never
downloads one. The decisions here are about failure: what to retry, what needs a person.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx

from worker.errors import PlatformUnavailable, StatementError

DEFAULT_MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
_CHUNK_BYTES = 64 * 1024


def download_statement(
    url: str, dest: Path, *, client: httpx.Client, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
) -> Path:
    """Stream `url` into the file `dest` (atomically: a partial download never sits there).

    Non-200 answers (404 included: the file may not be generated yet) and every httpx error
    raise PlatformUnavailable: retry later. A body over `max_bytes` raises StatementError
    instead: the same file will be just as large tomorrow, so retrying would loop forever;
    someone has to look (or raise the limit). Messages omit the URL's query string, which may
    hold a signed download token.
    """
    shown = _redact(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(client, url, shown, out, max_bytes)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _fetch(client: httpx.Client, url: str, shown: str, out: IO[bytes], max_bytes: int) -> None:
    try:
        # Signed download URLs commonly redirect to object storage; a 3xx is not a failure.
        with client.stream("GET", url, follow_redirects=True) as response:
            if response.status_code != 200:
                raise PlatformUnavailable(
                    f"statement download {shown}: HTTP {response.status_code}"
                )
            _check_declared_length(response, max_bytes, shown)
            written = 0
            for chunk in response.iter_bytes(_CHUNK_BYTES):
                written += len(chunk)
                if written > max_bytes:
                    raise _too_large(shown, max_bytes)
                out.write(chunk)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # The message may include the URL; the chained exception keeps the detail.
        raise PlatformUnavailable(f"statement download {shown}: {type(exc).__name__}") from exc


def _check_declared_length(response: httpx.Response, max_bytes: int, shown: str) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(shown, max_bytes)


def _too_large(shown: str, max_bytes: int) -> StatementError:
    return StatementError(f"statement download {shown} exceeds the {max_bytes}-byte limit")


def _redact(url: str) -> str:
    try:
        return urlsplit(url)._replace(query="", fragment="").geturl()
    except ValueError:
        return "<unparseable statement url>"
