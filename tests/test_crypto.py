from __future__ import annotations

import json
import stat
from pathlib import Path

import base58
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from k2node import crypto
from k2node.b58 import b58decode, b58encode
from k2node.crypto import (
    Keypair,
    WalletError,
    decode_pubkey,
    load_or_create_wallet,
    load_wallet,
    payload_signing,
    verify_signature,
    web3_account,
)


def test_wallet_is_created_once_in_solana_format(tmp_path: Path) -> None:
    path = tmp_path / "w" / "id.json"
    pair, created = load_or_create_wallet(path)
    assert created
    raw = json.loads(path.read_text())
    assert len(raw) == 64 and all(0 <= b < 256 for b in raw)
    assert bytes(raw[32:]) == pair.public_bytes
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created = load_or_create_wallet(path)
    assert not created and again.pubkey == pair.pubkey
    assert pair.pubkey not in repr(pair.secret_bytes) and "secret" not in repr(pair)


@pytest.mark.parametrize(
    "content", ["", "{}", "[1,2,3]", json.dumps([300] * 64), json.dumps(list(range(64)))]
)
def test_bad_wallet_files_are_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "id.json"
    path.write_text(content)
    with pytest.raises(WalletError, match=str(path)):
        load_wallet(path)


@given(st.binary(max_size=1300))
@example(b"\0" * 70)  # all zeros, past the short-input path
@example(b"\0\0" + b"\xff" * 100)
@example(b"\x01" + b"\0" * 64)
def test_base58_agrees_with_the_pure_python_library(data: bytes) -> None:
    text = base58.b58encode(data).decode()
    assert b58encode(data) == text
    assert b58decode(text) == data == b58decode(text.encode())


# (GMP, which converts the number, would take a sign, spaces and underscores itself)
@pytest.mark.parametrize(
    "bad",
    ["0", "O", "I", "l", "abc+", "ünï", " 1", "1\x00", "+2", "-2", "2_2", "\u20032"],
)
def test_base58_refuses_what_is_outside_the_alphabet(bad: str) -> None:
    with pytest.raises(ValueError):
        base58.b58decode(bad)  # the reference refuses it too
    with pytest.raises(ValueError):
        b58decode(bad)
    with pytest.raises(ValueError):
        b58decode(bad.encode())
    with pytest.raises(ValueError):
        b58decode(b"2\xff")


def test_signed_payload_round_trip_and_tampering() -> None:
    me, other = Keypair.generate(), Keypair.generate()
    body = {"round": 3, "value": "ünï", "n": 1.5}
    signed = payload_signing(body, me)
    raw = base58.b58decode(signed)
    assert raw[64:] == '{"round":3,"value":"ünï","n":1.5}'.encode()
    assert verify_signature(signed, me.pubkey) == {"data": raw[64:].decode()}
    assert verify_signature(signed, other.pubkey) == {"error": "Invalid signature"}
    flipped = base58.b58encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode()
    assert verify_signature(flipped, me.pubkey) == {"error": "Invalid signature"}
    for junk in ("", "0OIl", "abc"):
        assert verify_signature(junk, me.pubkey) == {"error": "Invalid signature"}
    assert verify_signature(signed, "not-a-key") == {"error": "Invalid signature"}


def test_what_this_process_signs_opens_without_a_second_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    me = Keypair.generate()
    signed = payload_signing({"round": 1}, me)
    checked: list[str] = []
    real_open = crypto._opened

    def counting(signed: str, pubkey: str) -> str | None:
        checked.append(signed)
        return real_open(signed, pubkey)

    monkeypatch.setattr(crypto, "_opened", counting)
    assert verify_signature(signed, me.pubkey) == {"data": '{"round":1}'}
    assert checked == []  # remembered when it was signed
    # signed elsewhere (PyNaCl itself): checked once, then remembered
    message = b'{"round":2}'
    elsewhere = base58.b58encode(me.signing_key.sign(message).signature + message).decode()
    for _ in range(2):
        assert verify_signature(elsewhere, me.pubkey) == {"data": message.decode()}
    assert checked == [elsewhere]
    # another key: checked, and refused
    assert verify_signature(signed, Keypair.generate().pubkey) == {"error": "Invalid signature"}
    assert len(checked) == 2


def test_remembered_payloads_are_bounded() -> None:
    me = Keypair.generate()
    first = payload_signing({"n": -1}, me)
    for n in range(crypto.REMEMBERED_PAYLOADS):
        payload_signing({"n": n}, me)
    assert len(crypto._OPENED) <= crypto.REMEMBERED_PAYLOADS
    assert (first, me.pubkey) not in crypto._OPENED  # the oldest went first
    assert verify_signature(first, me.pubkey) == {"data": '{"n":-1}'}  # checked again


def test_public_keys_arrive_as_base58_or_bn() -> None:
    pair = Keypair.generate()
    assert decode_pubkey(pair.pubkey) == pair.pubkey
    assert decode_pubkey({"_bn": pair.public_bytes.hex()}) == pair.pubkey
    account = web3_account(pair)
    assert decode_pubkey(account["_keypair"]["publicKey"]) == pair.pubkey
    secret = account["_keypair"]["secretKey"]
    assert bytes(secret[str(i)] for i in range(64)) == pair.secret_bytes
    for bad in ("", "abc", {"_bn": "zz"}, {"_bn": 5}, 12, None):
        with pytest.raises(ValueError):
            decode_pubkey(bad)
