"""Keys, wallet files and the template's signed payloads (ed25519, base58)."""

from __future__ import annotations

import functools
import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import SigningKey, VerifyKey

from k2node.b58 import b58decode, b58encode
from k2node.contract.jsjson import stringify

_HEX64 = re.compile(r"^[0-9a-fA-F]{1,64}$")


class WalletError(Exception):
    pass


@dataclass(frozen=True)
class Keypair:
    signing_key: SigningKey

    @classmethod
    def generate(cls) -> Keypair:
        return cls(SigningKey.generate())

    @classmethod
    def from_secret(cls, secret: bytes) -> Keypair:
        if len(secret) != 64:
            raise WalletError(f"a secret key has 64 bytes, got {len(secret)}")
        pair = cls(SigningKey(secret[:32]))
        if pair.public_bytes != secret[32:]:
            raise WalletError("secret key bytes 32..63 are not the public key of bytes 0..31")
        return pair

    @property
    def public_bytes(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @functools.cached_property
    def pubkey(self) -> str:
        return b58encode(self.public_bytes)

    @property
    def secret_bytes(self) -> bytes:
        return bytes(self.signing_key) + self.public_bytes

    def sign(self, message: bytes) -> bytes:
        return bytes(self.signing_key.sign(message).signature)

    def __repr__(self) -> str:  # never print the secret
        return f"Keypair({self.pubkey})"


def load_wallet(path: Path) -> Keypair:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise WalletError(f"wallet file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise WalletError(f"wallet file {path} is not a JSON array of 64 bytes: {exc}") from None
    if not (isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw)):
        raise WalletError(f"wallet file {path} is not a JSON array of 64 bytes")
    try:
        return Keypair.from_secret(bytes(raw))
    except WalletError as exc:
        raise WalletError(f"wallet file {path}: {exc}") from None


def load_or_create_wallet(path: Path) -> tuple[Keypair, bool]:
    """Return the wallet at `path`, creating it (mode 0600, Solana id.json format) if absent."""
    if path.exists():
        return load_wallet(path), False
    pair = Keypair.generate()
    new_folders = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(list(pair.secret_bytes), out)
        # on disk, with its name, before anything is staked or signed with it: a power cut
        # must not leave the node with a new key
        out.flush()
        os.fsync(out.fileno())
    for folder in {path.parent, *(p.parent for p in new_folders)}:
        _sync_folder(folder)
    return pair, True


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def decode_pubkey(value: Any) -> str:
    """A public key as base58, from base58 or from an old web3 `{"_bn": hex}` object."""
    if isinstance(value, str):
        try:
            raw = b58decode(value)
        except ValueError:
            raise ValueError(f"not a base58 public key: {value[:60]!r}") from None
        if len(raw) != 32:
            raise ValueError(f"a public key has 32 bytes, got {len(raw)}")
        return value
    if isinstance(value, dict) and isinstance(value.get("_bn"), str) and _HEX64.match(value["_bn"]):
        return b58encode(bytes.fromhex(value["_bn"].rjust(64, "0")))
    raise ValueError("a public key must be a base58 string or {'_bn': hex}")


def verify_detached(pubkey: str, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(b58decode(pubkey)).verify(message, signature)
    except (BadSignatureError, NaclValueError, ValueError, TypeError):
        return False
    return True


def payload_signing(body: Any, keypair: Keypair) -> str:
    """The template's signed payload: bs58(signature || UTF-8 JSON.stringify(body))."""
    text = stringify(body)
    message = text.encode()
    signed = b58encode(keypair.sign(message) + message)
    if len(signed) <= REMEMBERED_PAYLOAD_CHARS:  # it opens, with this key, to this text
        _remember((signed, keypair.pubkey), text)
    return signed


def verify_signature(signed: str, pubkey: str) -> dict[str, str]:
    """Open a signed payload: `{"data": message}` or `{"error": "Invalid signature"}`."""
    if not isinstance(signed, str) or not isinstance(pubkey, str | dict):
        return {"error": "Invalid signature"}
    key = pubkey if isinstance(pubkey, str) else decode_pubkey_or_none(pubkey)
    if key is None:
        return {"error": "Invalid signature"}
    if len(signed) <= REMEMBERED_PAYLOAD_CHARS:
        message = _opened_remembered(signed, key)
    else:
        message = _opened(signed, key)
    return {"error": "Invalid signature"} if message is None else {"data": message}


def decode_pubkey_or_none(value: Any) -> str | None:
    try:
        return decode_pubkey(value)
    except ValueError:
        return None


def _opened(signed: str, pubkey: str) -> str | None:
    try:
        raw = b58decode(signed)
        key = VerifyKey(b58decode(decode_pubkey(pubkey)))
        return key.verify(raw[64:], raw[:64]).decode("utf-8")
    except (BadSignatureError, NaclValueError, ValueError, TypeError, UnicodeDecodeError):
        return None


# A pure function of its text, remembered for short payloads (a signed submission's digest
# is some 200 characters): the nodes of a simulation, in one process, each check the same
# few signed submissions, and a node's audits may check one again. What this process signs
# is remembered as it is made: a signature just made with a key opens with that key (in a
# simulation, every submission is made in the process that audits it). Bounded in memory.
REMEMBERED_PAYLOAD_CHARS = 1024
REMEMBERED_PAYLOADS = 4096
_OPENED: OrderedDict[tuple[str, str], str | None] = OrderedDict()


def _remember(key: tuple[str, str], message: str | None) -> None:
    _OPENED[key] = message
    if len(_OPENED) > REMEMBERED_PAYLOADS:
        _OPENED.popitem(last=False)


def _opened_remembered(signed: str, pubkey: str) -> str | None:
    key = (signed, pubkey)
    try:
        message = _OPENED[key]
    except KeyError:
        message = _opened(signed, pubkey)
        _remember(key, message)
        return message
    _OPENED.move_to_end(key)
    return message


def web3_account(keypair: Keypair, with_secret: bool = True) -> dict[str, Any]:
    """The shape `getSubmitterAccount` answers (a web3.js Keypair); without the secret key
    for tasks that sign through the node."""
    shown: dict[str, Any] = {"publicKey": {"_bn": keypair.public_bytes.hex()}}
    if with_secret:
        shown["secretKey"] = {str(i): b for i, b in enumerate(keypair.secret_bytes)}
    return {"_keypair": shown}
