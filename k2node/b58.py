"""Base58 (Bitcoin's alphabet), as Solana and the Koii template write keys, signatures
and signed payloads, and as a CIDv0 is written."""

from __future__ import annotations

import based58

_B58 = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_PAIRS = [bytes([_B58[i // 58], _B58[i % 58]]) for i in range(58 * 58)]
_B58_TEN = 58**10  # ten digits: one division of the big number, then five of a small one


def b58encode(data: bytes) -> str:
    """Bytes as base58 (Bitcoin's alphabet). A long input (a signed payload) is divided ten
    digits at a time here: based58 divides digit by digit over every byte, which costs it
    twice as much past some 100 bytes."""
    if len(data) <= 64:
        return based58.b58encode(data).decode()
    number = int.from_bytes(data, "big")
    pairs: list[bytes] = []
    while number:
        number, ten = divmod(number, _B58_TEN)
        for _ in range(5):
            ten, pair = divmod(ten, 3364)
            pairs.append(_B58_PAIRS[pair])
    digits = b"".join(reversed(pairs)).lstrip(b"1")
    zeros = len(data) - len(data.lstrip(b"\0"))  # each leading zero byte is a "1"
    return (b"1" * zeros + digits).decode()


def b58decode(text: str | bytes) -> bytes:
    """Base58 (Bitcoin's alphabet) to bytes; ValueError for a character outside it."""
    return based58.b58decode(text.encode() if isinstance(text, str) else text)
