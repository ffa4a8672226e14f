"""Envelope throughput, as ratios against baselines measured in the same run.

    .venv/bin/python benchmarks/envelope.py [--gmssl-sample-kb 256] [--repeat 5]

Prints, for a 1 KB business payload and a 3 MB HOS00028 image upload (base64, ~4 MB of JSON):
  - seal+open through worker.protocol.envelope (OpenSSL: hashlib SM3, cryptography SM4);
  - (a) the raw OpenSSL primitives over the same bytes: SM4 encrypt + SM3 + SM4 decrypt + SM3;
  - (b) the gmssl reference primitives over the same bytes (a lower bound of a gmssl envelope).
gmssl is ~1000x slower, so by default it is timed on a sample of the payload and scaled
linearly (SM3 and SM4-ECB are linear in the input); --gmssl-sample-kb 0 times it in full.
Never quote the absolute times alone: this machine is noisy, the ratios are the result.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import time
from collections.abc import Callable

from pydantic import SecretStr

from worker.clock import system_clock
from worker.protocol import crypto, envelope
from worker.settings import SANDBOX_PLATFORM_ID, SANDBOX_SECRET

CREDS = envelope.Credentials(SANDBOX_PLATFORM_ID, SecretStr(SANDBOX_SECRET))
KEY = CREDS.sm4_key


def payload_1kb() -> str:
    business = {"orderId": "ORD20261125000001", "hospitalId": "H0000001", "note": "住院押金" * 60}
    text = envelope.business_text(business)
    return text + " " * max(0, 1024 - len(text.encode()))


def payload_3mb_image() -> str:
    image = base64.b64encode(os.urandom(3 * 1024 * 1024)).decode("ascii")
    return envelope.business_text(
        {
            "treatmentSerialNo": "ZY2026112500001",
            "idNo": "445221000000001010",
            "fileType": "jpg",
            "imageBase64": image,
            "imageType": "3004",
            "verifyStatus": "0",
        }
    )


def seal_open(text: str) -> None:
    sealed = envelope.seal_request(
        "HOS00028", text, credentials=CREDS, seq_id=envelope.new_seq_id(), at=system_clock()
    )
    envelope.open_request(sealed, credentials=CREDS)


def primitives(text: str, sm3: Callable[[bytes], str], enc, dec) -> None:
    data = text.encode("utf-8")
    ciphertext = enc(KEY, data)
    sm3(data)
    dec(KEY, ciphertext)
    sm3(data)


def openssl_primitives(text: str) -> None:
    primitives(text, crypto.sm3_hex, crypto.sm4_ecb_encrypt, crypto.sm4_ecb_decrypt)


def gmssl_primitives(text: str) -> None:
    primitives(
        text,
        crypto.reference_sm3_hex,
        crypto.reference_sm4_ecb_encrypt,
        crypto.reference_sm4_ecb_decrypt,
    )


def best_of(func: Callable[[str], None], text: str, repeat: int, number: int) -> float:
    """Seconds per call: the median of `repeat` runs of `number` calls each."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            func(text)
        runs.append((time.perf_counter() - start) / number)
    return statistics.median(runs)


def gmssl_time(text: str, sample_kb: int) -> tuple[float, str]:
    size = len(text.encode())
    if sample_kb <= 0 or sample_kb * 1024 >= size:
        return best_of(gmssl_primitives, text, 1, 1), "timed in full"
    sample = text[: sample_kb * 1024]
    per_call = best_of(gmssl_primitives, sample, 1, 1)
    return per_call * size / len(sample.encode()), f"timed on {sample_kb} KB, scaled"


def report(label: str, text: str, repeat: int, number: int, sample_kb: int) -> dict[str, float]:
    ours = best_of(seal_open, text, repeat, number)
    raw = best_of(openssl_primitives, text, repeat, number)
    ref, how = gmssl_time(text, sample_kb)
    size = len(text.encode())
    print(f"\n{label}: business JSON {size:,} bytes")
    print(f"  seal+open (worker.protocol.envelope) : {1 / ours:12,.1f} per second")
    print(f"  ratio to raw OpenSSL SM4+SM3 over the same bytes : {ours / raw:6.2f}x the time")
    print(f"  speed-up over the gmssl reference ({how}) : {ref / ours:8,.0f}x faster")
    return {"ratio_openssl": ours / raw, "speedup_gmssl": ref / ours}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--gmssl-sample-kb", type=int, default=256)
    args = parser.parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable), *sys.argv]))
    report("1 KB payload", payload_1kb(), args.repeat, 2000, args.gmssl_sample_kb)
    big = report("3 MB HOS00028 image", payload_3mb_image(), args.repeat, 3, args.gmssl_sample_kb)
    ok = big["ratio_openssl"] <= 2.0 and big["speedup_gmssl"] >= 200
    print(f"\n3 MB target (<= 2x raw OpenSSL, >= 200x gmssl): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
