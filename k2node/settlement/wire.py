"""The task program on the wire: instruction data and account lists, as K2 transactions
carry them (K2-CONTRACT: "K2 on the wire").

Instruction data is one u8 index, then little-endian signed 64-bit integers and fixed-width
strings right-padded with spaces, in the field order of Koii's published layouts. Where
Koii's own account lists are public (create-task-cli, the Desktop node) they are followed;
for the instructions only Koii's closed task-node builds (SubmitTask, the audits, Payout,
the distribution list) the lists are k2node's model, shaped like the public ones.
Transactions themselves are built, signed and parsed by solders.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM
from solders.transaction import Transaction

from k2node.crypto import Keypair as WalletKeypair

PROGRAM_ID = Pubkey.from_string("Koiitask22222222222222222222222222222222222")
CLOCK = Pubkey.from_string("SysvarC1ock11111111111111111111111111111111")
# An upload chunk: u16 chunk index, u16 chunk size (always 508), 508 bytes of the list's JSON.
CHUNK_BYTES = 508
CHUNK_BLOB = 512


class WireError(ValueError):
    """Bytes that are not a task-program instruction the contract knows."""


class Ix(IntEnum):
    CREATE_TASK = 0
    SUBMIT_TASK = 1
    AUDIT_SUBMISSIONS = 2
    AUDIT_DISTRIBUTION = 3
    PAYOUT = 4
    SET_ACTIVE = 6
    CLAIM_REWARD = 7
    FUND_TASK = 8
    STAKE = 9
    WITHDRAW = 10
    UPLOAD_DISTRIBUTION_LIST = 11
    SUBMIT_DISTRIBUTION_LIST = 12
    UPDATE_TASK = 14


# Fields in order: ("name", width) with width 0 for an i64, N for an N-byte string, -N for raw.
_CREATE_FIELDS: tuple[tuple[str, int], ...] = (
    ("task_name", 24),
    ("task_description", 64),
    ("task_audit_program", 64),
    ("task_executable_network", 64),
    ("total_bounty_amount", 0),
    ("bounty_amount_per_round", 0),
    ("round_time", 0),
    ("audit_window", 0),
    ("submission_window", 0),
    ("minimum_stake_amount", 0),
    ("task_metadata", 64),
    ("local_vars", 64),
    ("allowed_failed_distributions", 0),
)
_LAYOUTS: dict[Ix, tuple[tuple[str, int], ...]] = {
    Ix.CREATE_TASK: _CREATE_FIELDS,
    Ix.SUBMIT_TASK: (("submission", 512), ("round", 0)),
    Ix.AUDIT_SUBMISSIONS: (("is_valid", 0), ("round", 0)),
    Ix.AUDIT_DISTRIBUTION: (("is_valid", 0), ("round", 0)),
    Ix.PAYOUT: (("round", 0),),
    Ix.SET_ACTIVE: (("is_active", 0),),
    Ix.CLAIM_REWARD: (),
    Ix.FUND_TASK: (("amount", 0),),
    Ix.STAKE: (("amount", 0), ("ip_address", 64)),
    Ix.WITHDRAW: (),
    Ix.UPLOAD_DISTRIBUTION_LIST: (("chunk", -CHUNK_BLOB), ("round", 0)),
    Ix.SUBMIT_DISTRIBUTION_LIST: (("round", 0),),
    # CreateTask's fields without the bounty: the new version takes over what is left.
    Ix.UPDATE_TASK: tuple(f for f in _CREATE_FIELDS if f[0] != "total_bounty_amount"),
}

# The accounts of each instruction in order: (role, signer, writable). `clock` and `system`
# are the sysvar and the System program.
_TASK = ("task", False, True)
_SIGNER = ("signer", True, True)
_POT = ("stake_pot", False, True)
_CLOCK = ("clock", False, False)
_ACCOUNTS: dict[Ix, tuple[tuple[str, bool, bool], ...]] = {
    Ix.CREATE_TASK: (("payer", True, True), ("task", True, True), _POT, _CLOCK),
    Ix.SUBMIT_TASK: (_TASK, _SIGNER, _CLOCK),
    Ix.AUDIT_SUBMISSIONS: (_TASK, _SIGNER, ("candidate", False, False), _CLOCK),
    Ix.PAYOUT: (_TASK, _SIGNER, _POT, _CLOCK),
    Ix.SET_ACTIVE: (_TASK, ("signer", True, False)),
    Ix.AUDIT_DISTRIBUTION: (_TASK, _SIGNER, ("candidate", False, True), _CLOCK),
    Ix.CLAIM_REWARD: (_TASK, _SIGNER, _POT, ("beneficiary", False, True)),
    Ix.FUND_TASK: (_TASK, _SIGNER, _POT, ("system", False, False), _CLOCK),
    Ix.WITHDRAW: (_TASK, _SIGNER, _CLOCK),
    Ix.STAKE: (_TASK, _SIGNER, _POT, _CLOCK),
    Ix.UPLOAD_DISTRIBUTION_LIST: (("task", False, False), _SIGNER),
    Ix.SUBMIT_DISTRIBUTION_LIST: (_TASK, _SIGNER, _CLOCK),
    # create-task-cli's list: the old version and its pot, then the new ones it creates.
    Ix.UPDATE_TASK: (
        ("payer", True, True),
        _TASK,
        _POT,
        _CLOCK,
        ("new_task", True, True),
        ("new_stake_pot", False, True),
    ),
}
_FIXED = {"clock": CLOCK, "system": SYSTEM_PROGRAM}
_I64 = struct.Struct("<q")


def _pad(name: str, text: str, width: int) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > width:
        raise WireError(f"{name} is {len(raw)} bytes, at most {width} fit")
    return raw + b" " * (width - len(raw))


def encode(ix: Ix, fields: dict[str, Any]) -> bytes:
    """The instruction data of `ix` with `fields` (strings, integers, bytes for a chunk)."""
    out = [bytes([ix])]
    for name, width in _LAYOUTS[ix]:
        value = fields[name]
        if width == 0:
            try:
                out.append(_I64.pack(int(value)))
            except struct.error:
                raise WireError(f"{name} does not fit in 64 bits: {value}") from None
        elif width > 0:
            out.append(_pad(name, value, width))
        else:
            out.append(bytes(value).ljust(-width, b"\0")[:-width])
    return b"".join(out)


def decode(data: bytes) -> tuple[Ix, dict[str, Any]]:
    """Index and fields of task-program instruction data; strings lose their padding."""
    if not data:
        raise WireError("empty instruction data")
    try:
        ix = Ix(data[0])
    except ValueError:
        raise WireError(f"unknown task program instruction {data[0]}") from None
    fields: dict[str, Any] = {}
    at = 1
    for name, width in _LAYOUTS[ix]:
        size = 8 if width == 0 else abs(width)
        if at + size > len(data):
            if ix is Ix.STAKE and name == "ip_address" and at == len(data):
                fields[name] = ""  # the layout without the address
                break
            raise WireError(f"{ix.name} data is {len(data)} bytes, too short")
        piece = data[at : at + size]
        at += size
        if width == 0:
            fields[name] = _I64.unpack(piece)[0]
        elif width > 0:
            try:
                fields[name] = piece.rstrip(b" \0").decode("utf-8")
            except UnicodeDecodeError:
                raise WireError(f"{name} is not UTF-8") from None
        else:
            fields[name] = piece
    if at != len(data):
        raise WireError(f"{ix.name} data is {len(data)} bytes, {at} expected")
    return ix, fields


def roles(ix: Ix, keys: list[Pubkey]) -> dict[str, Pubkey]:
    """The instruction's accounts by role; a fixed account in the wrong place is refused."""
    expected = _ACCOUNTS[ix]
    if len(keys) != len(expected):
        raise WireError(f"{ix.name} takes {len(expected)} accounts, got {len(keys)}")
    found = {}
    for (role, _, _), key in zip(expected, keys, strict=True):
        if role in _FIXED and key != _FIXED[role]:
            raise WireError(f"{ix.name}: account {role} must be {_FIXED[role]}")
        found[role] = key
    return found


_SIGNING_ROLES = {
    ix: {r for r, signer, _ in accounts if signer} for ix, accounts in _ACCOUNTS.items()
}


def signs(ix: Ix, role: str) -> bool:
    return role in _SIGNING_ROLES[ix]


def instruction(ix: Ix, fields: dict[str, Any], accounts: dict[str, Pubkey]) -> Instruction:
    metas = [
        AccountMeta(_FIXED.get(role) or accounts[role], signer, writable)
        for role, signer, writable in _ACCOUNTS[ix]
    ]
    return Instruction(PROGRAM_ID, encode(ix, fields), metas)


def chunks(list_json: bytes) -> list[bytes]:
    """A distribution list's JSON as upload chunks: u16 index, u16 508, the piece, zeros."""
    pieces = [list_json[i : i + CHUNK_BYTES] for i in range(0, len(list_json), CHUNK_BYTES)]
    return [
        struct.pack("<HH", i, CHUNK_BYTES) + piece.ljust(CHUNK_BYTES, b"\0")
        for i, piece in enumerate(pieces or [b""])
    ]


def unchunk(chunk: bytes) -> tuple[int, bytes]:
    """(index, payload) of an upload chunk; the payload loses its zero padding."""
    index, size = struct.unpack_from("<HH", chunk)
    if size != CHUNK_BYTES:
        raise WireError(f"a distribution chunk says it holds {size} bytes, not {CHUNK_BYTES}")
    return index, chunk[4:].rstrip(b"\0")


def is_writable(message: Message, index: int) -> bool:
    """Whether the message's account `index` is writable, from the message header."""
    header = message.header
    signed = header.num_required_signatures
    if index < signed:
        return index < signed - header.num_readonly_signed_accounts
    return index < len(message.account_keys) - header.num_readonly_unsigned_accounts


@dataclass(frozen=True)
class Signed:
    """A signed transaction and what the ledger keeps of it."""

    transaction: Transaction

    @property
    def signature(self) -> str:
        return str(self.transaction.signatures[0])

    @property
    def wire(self) -> bytes:
        return bytes(self.transaction)


def signer(keypair: WalletKeypair) -> Keypair:
    """A wallet's key as solders signs with it."""
    return Keypair.from_bytes(keypair.secret_bytes)


# Who signs: a solders keypair, or a wallet's (signed through PyNaCl: solders' Keypair
# derives its public key again at every use, several times a transaction).
Signer = Keypair | WalletKeypair


def _key(signer: Signer) -> Pubkey:
    if isinstance(signer, Keypair):
        return signer.pubkey()
    return Pubkey.from_bytes(signer.public_bytes)


def sign(
    instructions: list[Instruction],
    payer: Signer,
    signers: Sequence[Signer],
    blockhash: Hash,
    checked: bool = True,
) -> Signed:
    """One transaction, the payer paying its fees, signed by the payer and `signers`.
    `checked=False`, for a K2 that checks no signature (a simulation's): each signature is
    a stand-in, the SHA-512 of the signer's key and the message, as unique as a real one
    (a transaction's first signature is its id) at a thirtieth of its cost."""
    payer_key = _key(payer)
    message = Message.new_with_blockhash(instructions, payer_key, blockhash)
    by_key = {payer_key: payer} | {_key(s): s for s in signers}
    required = message.account_keys[: message.header.num_required_signatures]
    if set(required) != set(by_key):
        missing = [str(k) for k in required if k not in by_key]
        extra = [str(k) for k in by_key if k not in required]
        raise ValueError(f"signers do not match the message: missing {missing}, extra {extra}")
    raw = bytes(message)
    if not checked:
        signatures = [
            Signature.from_bytes(hashlib.sha512(bytes(k) + raw).digest()) for k in required
        ]
    else:
        signatures = [
            s.sign_message(raw) if isinstance(s, Keypair) else Signature.from_bytes(s.sign(raw))
            for s in (by_key[k] for k in required)
        ]
    return Signed(Transaction.populate(message, signatures))
