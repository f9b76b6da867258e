"""Base58 (Bitcoin's alphabet), as Solana and the Koii template write keys, signatures
and signed payloads, and as a CIDv0 is written.

The number is converted by GMP (gmpy2), in its own base-58 digits, which a translation
table turns into Bitcoin's alphabet and back: GMP's conversion is subquadratic and in C,
where base58 libraries divide digit by digit (a signed payload of 150 bytes: 5 us here,
30 in Python, 17 to decode in Rust's based58).
"""

from __future__ import annotations

import gmpy2

_BITCOIN = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_GMP = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuv"  # GMP's first 58 digits
_TO_BITCOIN = str.maketrans(_GMP, _BITCOIN)
# Every other ASCII character becomes one GMP refuses: its parser would take a sign, space
# or underscore, and Bitcoin's alphabet leaves out 0, O, I and l, which are GMP digits.
_FROM_BITCOIN = {c: ord("!") for c in range(128)} | str.maketrans(_BITCOIN, _GMP)


def b58encode(data: bytes) -> str:
    """Bytes as base58; each leading zero byte is a "1"."""
    digits = data.lstrip(b"\0")
    ones = "1" * (len(data) - len(digits))
    if not digits:
        return ones
    gmp_digits: str = gmpy2.mpz(int.from_bytes(digits, "big")).digits(58)
    return ones + gmp_digits.translate(_TO_BITCOIN)


def b58decode(text: str | bytes) -> bytes:
    """Base58 to bytes; ValueError for a character outside the alphabet."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")  # U+FFFD: not ASCII, refused below
    if not text.isascii():
        raise ValueError("base58 text holds a character outside the alphabet")
    digits = text.lstrip("1")
    zeros = b"\0" * (len(text) - len(digits))
    if not digits:
        return zeros
    try:
        number = int(gmpy2.mpz(digits.translate(_FROM_BITCOIN), 58))
    except ValueError:
        raise ValueError("base58 text holds a character outside the alphabet") from None
    return zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")
