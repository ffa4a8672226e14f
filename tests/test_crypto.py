"""SM3/SM4: standard vectors on both implementations, and OpenSSL == gmssl on any input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import BadCiphertextLength, BadPadding, ConfigurationError
from worker.protocol import crypto

SM3_IMPLS = [crypto.sm3_hex, crypto.reference_sm3_hex]
ENCRYPTS = [crypto.sm4_ecb_encrypt, crypto.reference_sm4_ecb_encrypt]
DECRYPTS = [crypto.sm4_ecb_decrypt, crypto.reference_sm4_ecb_decrypt]

# GB/T 32905-2016 appendix A
SM3_ABC = "66C7F0F462EEEDD9D1F2D46BDC10E4E24167C4875CF2F7A2297DA02B8F4BA8E0"
SM3_64 = "DEBE9FF92275B8A138604889C18E5A4D6FDB70E5387E5765293DCBA39C0C5732"
# GB/T 32907-2016 appendix A, example 1 (one block, no padding)
SM4_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
SM4_CIPHER_BLOCK = bytes.fromhex("681EDF34D206965E86B3E94F536E4246")


@pytest.mark.parametrize("sm3", SM3_IMPLS)
def test_sm3_standard_vectors(sm3) -> None:
    assert sm3(b"abc") == SM3_ABC
    assert sm3(b"abcd" * 16) == SM3_64


@pytest.mark.parametrize("encrypt", ENCRYPTS)
def test_sm4_standard_vector_is_the_first_block(encrypt) -> None:
    # With PKCS#7 a 16-byte plaintext gains a full pad block; the first block is the vector.
    assert encrypt(SM4_KEY, SM4_KEY)[:16] == SM4_CIPHER_BLOCK


@pytest.mark.parametrize("decrypt", DECRYPTS)
def test_sm4_decrypts_what_either_side_encrypted(decrypt) -> None:
    for encrypt in ENCRYPTS:
        assert decrypt(SM4_KEY, encrypt(SM4_KEY, b"\xe6\xb5\x8b\xe8\xaf\x95")) == "测试".encode()


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=4096), st.text(max_size=512).map(str.encode)))
def test_openssl_and_gmssl_agree_on_any_payload(data: bytes) -> None:
    assert crypto.sm3_hex(data) == crypto.reference_sm3_hex(data)
    ciphertext = crypto.sm4_ecb_encrypt(SM4_KEY, data)
    assert ciphertext == crypto.reference_sm4_ecb_encrypt(SM4_KEY, data)
    assert crypto.reference_sm4_ecb_decrypt(SM4_KEY, ciphertext) == data


def test_large_payload_agrees() -> None:
    data = ("住院押金" * 20_000).encode()  # 240 KB of Chinese text
    assert crypto.sm4_ecb_encrypt(SM4_KEY, data) == crypto.reference_sm4_ecb_encrypt(SM4_KEY, data)


@pytest.mark.parametrize("decrypt", DECRYPTS)
def test_truncated_ciphertext_is_a_length_error(decrypt) -> None:
    ciphertext = crypto.sm4_ecb_encrypt(SM4_KEY, b"x" * 40)
    with pytest.raises(BadCiphertextLength):
        decrypt(SM4_KEY, ciphertext[:-3])
    with pytest.raises(BadCiphertextLength):
        decrypt(SM4_KEY, b"")


@pytest.mark.parametrize("decrypt", DECRYPTS)
def test_wrong_key_is_a_padding_error(decrypt) -> None:
    ciphertext = crypto.sm4_ecb_encrypt(SM4_KEY, b"payload")
    with pytest.raises(BadPadding):
        decrypt(b"0000000000000000", ciphertext)


def test_key_is_the_first_16_characters_of_the_secret() -> None:
    assert crypto.sm4_key_from_secret("4117E877F5FA0A0188891283E4B617D5") == b"4117E877F5FA0A01"
    with pytest.raises(ConfigurationError):
        crypto.sm4_key_from_secret("short")
