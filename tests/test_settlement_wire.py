"""The task program on the wire, against @solana/web3.js and buffer-layout's encoding of
Koii's published layouts (tests/vectors/k2-wire: made once by make_vectors.js)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import decode_create_account, decode_transfer
from solders.transaction import Transaction

from k2node.settlement import wire
from tests.conftest import VECTORS

VECTOR = json.loads((VECTORS / "k2-wire" / "k2-wire.json").read_text())
KEYS = {
    n: Keypair.from_seed(bytes([k["seed"]]) * 32) for n, k in VECTOR["keys"].items() if "seed" in k
}
BY_PUBKEY = {str(k.pubkey()): k for k in KEYS.values()}


def _metas(message: Message, index: int = 0) -> list[tuple[str, bool, bool]]:
    """An instruction's accounts as (pubkey, signer, writable), resolved through its message."""
    compiled = message.instructions[index]
    keys = message.account_keys
    return [
        (str(keys[i]), message.is_signer(i), wire.is_writable(message, i))
        for i in compiled.accounts
    ]


def _instruction(message: Message) -> Instruction:
    compiled = message.instructions[0]
    metas = [AccountMeta(Pubkey.from_string(k), s, w) for k, s, w in _metas(message)]
    return Instruction(message.account_keys[compiled.program_id_index], compiled.data, metas)


def test_the_keys_are_the_ones_web3_derived() -> None:
    assert {n: str(k.pubkey()) for n, k in KEYS.items()} == {
        n: k["pubkey"] for n, k in VECTOR["keys"].items() if "seed" in k
    }


@pytest.mark.parametrize("case", VECTOR["cases"], ids=lambda c: c["name"])
def test_instruction_data_and_transactions_match_web3(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["data"])
    ix, fields = wire.decode(data)
    assert ix.name.replace("_", "") == case["name"].upper()
    assert wire.encode(ix, fields) == data  # byte for byte, padding included
    theirs = Transaction.from_bytes(base64.b64decode(case["transaction"]))
    theirs.verify()  # web3's signatures hold for solders
    keys = [Pubkey.from_string(k) for k, _, _ in case["accounts"]]
    ours_ix = wire.instruction(ix, fields, wire.roles(ix, keys))
    signers = [BY_PUBKEY[s] for s in case["signers"]]
    ours = wire.sign([ours_ix], signers[0], signers[1:], Hash.from_string(VECTOR["blockhash"]))
    mine = Transaction.from_bytes(ours.wire)
    mine.verify()
    # the same instruction, the same accounts with the same flags, the same payer; web3 sorts
    # keys of one kind by name and solders by first use, so the bytes may order them apart
    assert _metas(mine.message) == _metas(theirs.message)
    assert [m[0] for m in _metas(mine.message)] == [a[0] for a in case["accounts"]]
    assert mine.message.instructions[0].data == theirs.message.instructions[0].data == data
    assert mine.message.account_keys[0] == theirs.message.account_keys[0] == signers[0].pubkey()
    assert sorted(map(str, mine.message.account_keys)) == sorted(
        map(str, theirs.message.account_keys)
    )


def test_system_instructions_decode_as_web3_built_them() -> None:
    create, transfer = (
        Transaction.from_bytes(base64.b64decode(s["transaction"])) for s in VECTOR["system"]
    )
    params = decode_create_account(_instruction(create.message))
    assert params["owner"] == wire.PROGRAM_ID and params["space"] == 100
    assert params["to_pubkey"] == KEYS["staking"].pubkey()
    sent = decode_transfer(_instruction(transfer.message))
    assert sent["lamports"] == 1_000_000 and sent["to_pubkey"] == KEYS["peer"].pubkey()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (bytes([13]), "unknown task program instruction 13"),
        (bytes([1]) + b" " * 100, "too short"),
        (bytes([4]) + b"\0" * 9, "9 expected"),
        (bytes([1]) + b"\xff" * 512 + b"\0" * 8, "not UTF-8"),
    ],
)
def test_bad_instruction_data_is_refused_by_name(data: bytes, message: str) -> None:
    with pytest.raises(wire.WireError, match=message):
        wire.decode(data)


def test_strings_too_long_and_misplaced_fixed_accounts_are_refused() -> None:
    with pytest.raises(wire.WireError, match="at most 512"):
        wire.encode(wire.Ix.SUBMIT_TASK, {"submission": "é" * 257, "round": 1})
    task, signer = Pubkey.new_unique(), Pubkey.new_unique()
    with pytest.raises(wire.WireError, match="clock"):
        wire.roles(wire.Ix.SUBMIT_TASK, [task, signer, Pubkey.new_unique()])
    with pytest.raises(wire.WireError, match="3 accounts"):
        wire.roles(wire.Ix.SUBMIT_TASK, [task, signer])


def test_a_list_travels_in_chunks_and_comes_back_whole() -> None:
    text = json.dumps({str(i): i for i in range(300)}).encode()
    pieces = wire.chunks(text)
    assert all(len(p) == wire.CHUNK_BLOB for p in pieces) and len(pieces) == -(-len(text) // 508)
    assert b"".join(wire.unchunk(p)[1] for p in pieces) == text
    assert [wire.unchunk(p)[0] for p in pieces] == list(range(len(pieces)))
    # the chunk web3 made
    upload = next(c for c in VECTOR["cases"] if c["name"] == "UploadDistributionList")
    _, fields = wire.decode(bytes.fromhex(upload["data"]))
    assert wire.unchunk(fields["chunk"]) == (0, b'{"a":1}')
