"""SM3 and SM4 primitives: OpenSSL (fast, used in production) and gmssl (pure-Python reference).

Both sides expose the same four functions so tests can cross-check them on arbitrary input.
OpenSSL is reached through `hashlib` (SM3) and `cryptography` (SM4); gmssl is ~1000x slower and
exists only so a second, independent implementation vouches for the first.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from worker.errors import BadCiphertextLength, BadPadding, ConfigurationError

SM4_BLOCK_BYTES = 16


def sm4_key_from_secret(secret: str) -> bytes:
    """Spec 2.4: the SM4 key is the first 16 characters of the secret, as ASCII bytes."""
    head = secret[:SM4_BLOCK_BYTES]
    if len(head) < SM4_BLOCK_BYTES or not head.isascii():
        raise ConfigurationError("the platform secret must start with 16 ASCII characters")
    return head.encode("ascii")


# --- OpenSSL -----------------------------------------------------------------------------


def sm3_hex(data: bytes) -> str:
    """SM3 digest as uppercase hex (the form signData takes on the wire)."""
    return hashlib.new("sm3", data).hexdigest().upper()


def hmac_sm3_hex(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, "sm3").hexdigest().upper()


def sm4_ecb_encrypt(key: bytes, plaintext: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def sm4_ecb_decrypt(key: bytes, ciphertext: bytes) -> bytes:
    _check_block_length(ciphertext)
    decryptor = Cipher(algorithms.SM4(key), modes.ECB()).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    return _pkcs7_unpad(padded)


def _check_block_length(ciphertext: bytes) -> None:
    if not ciphertext or len(ciphertext) % SM4_BLOCK_BYTES:
        raise BadCiphertextLength(
            f"ciphertext is {len(ciphertext)} bytes, not a positive multiple of 16 (truncated?)"
        )


def _pkcs7_unpad(padded: bytes) -> bytes:
    # Checked by hand so the error says "bad padding" (almost always: the wrong key) instead
    # of cryptography's generic ValueError; every byte of the pad is checked.
    pad = padded[-1]
    if not 1 <= pad <= SM4_BLOCK_BYTES or padded[-pad:] != bytes([pad]) * pad:
        raise BadPadding("PKCS#7 padding is wrong: wrong key or corrupted ciphertext")
    return padded[:-pad]


# --- gmssl reference ----------------------------------------------------------------------


def reference_sm3_hex(data: bytes) -> str:
    from gmssl import func, sm3

    return sm3.sm3_hash(func.bytes_to_list(data)).upper()


def reference_sm4_ecb_encrypt(key: bytes, plaintext: bytes) -> bytes:
    from gmssl import sm4

    cipher = sm4.CryptSM4()  # gmssl pads with PKCS#7 by default
    cipher.set_key(key, sm4.SM4_ENCRYPT)
    return bytes(cipher.crypt_ecb(plaintext))


def reference_sm4_ecb_decrypt(key: bytes, ciphertext: bytes) -> bytes:
    from gmssl import sm4

    _check_block_length(ciphertext)
    # No padding mode: gmssl's own unpadding trusts the last byte blindly; we check it ourselves.
    cipher = sm4.CryptSM4(padding_mode=None)
    cipher.set_key(key, sm4.SM4_DECRYPT)
    return _pkcs7_unpad(bytes(cipher.crypt_ecb(ciphertext)))
