"""Settings: one frozen object merged at the edge from defaults, `.env-local`, env and flags."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from k2node.contract.units import DEFAULT_SLOT_MS, ROE_PER_KOII
from k2node.contract.values import is_int

DEFAULT_PORT = 30017
DEFAULT_TASK_ENTRY = "k2node.examples.hello_task:HelloTask"
# The bundled example's config-task.yml ships inside the package: `k2node run` works anywhere.
DEFAULT_TASK_CONFIG = Path(__file__).resolve().parent / "examples" / "config-task.yml"


class ConfigError(Exception):
    """A bad or missing setting; the message names it."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    wallet_location: Path = Path("data/wallets/id.json")
    k2_node_url: str = ""
    tasks: tuple[str, ...] = ()
    task_stakes: tuple[int, ...] = ()  # ROE, one per task
    global_timers: bool = True
    server_host: str = "127.0.0.1"
    server_port: int = DEFAULT_PORT
    service_url: str = ""
    environment: str = "development"
    initial_staking_wallet_balance: int = 15 * ROE_PER_KOII
    slot_ms: float = DEFAULT_SLOT_MS
    task_config: Path = DEFAULT_TASK_CONFIG
    task_entry: str = DEFAULT_TASK_ENTRY
    admin_token: str = ""
    task_transfers: tuple[str, ...] = ()  # tasks that may move the main wallet's money
    ipfs_api: str = ""  # empty: the embedded store; else a kubo RPC API URL
    log_format: str = "auto"
    log_level: str = "info"
    task_max_body_mb: int = 1024  # request bodies the proxy lets through to a task
    task_ws_connections: int = 256  # WebSockets relayed to one task at once
    task_ws_message_mb: int = 4  # one relayed WebSocket message
    reload: bool = False  # restart a DEVELOPMENT task's process when its sources change
    auto_claim: int = 0  # ROE: claim a task's rewards once they reach this; 0: never
    http_idle_s: int = 30  # a connection with no request finished in this long is closed
    http_max_connections: int = 512  # open at once; past it a connection gets a 503
    task_sandbox: str = "auto"  # auto: Landlock where the kernel has it; required; off
    task_memory_mb: int = 1024  # per task process (RLIMIT_DATA)
    task_open_files: int = 1024  # per task process
    task_processes: int = 128  # processes and threads per task (a pids cgroup, or RLIMIT_NPROC)
    task_phase_cpu_s: int = 300  # CPU seconds a phase may burn before its process is restarted
    # .env-local and the environment, merged: where tasks' declared variables are found
    # (never logged, never shown: repr and equality leave it out)
    variables: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def public_url(self, port: int) -> str:
        return self.service_url or f"http://127.0.0.1:{port}"


def _koii_to_roe(name: str, text: str) -> int:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ConfigError(f"{name} must be a number of KOII, got {text!r}") from None
    if value < 0 or not value.is_finite():
        raise ConfigError(f"{name} must be a non-negative number of KOII, got {text!r}")
    return int(value * ROE_PER_KOII)


def _bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {text!r}")


def _port(name: str, text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} must be a port number 0-65535, got {text!r}")
    return port


def _positive(name: str, text: str, most: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= most:
        raise ConfigError(f"{name} must be a whole number 1-{most:,}, got {text!r}")
    return value


def _optional_url(name: str, text: str, expected: str) -> str:
    if text and not re.match(r"^https?://[^/\s]+", text):
        raise ConfigError(f"{name} must be {expected}; got {text!r}")
    return text


def _list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def load_settings(
    env_file: Path | None = Path(".env-local"),
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Settings:
    """Merge `.env-local`, then the environment, then flags; the later one wins."""
    merged: dict[str, str] = {}
    if env_file is not None and env_file.exists():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    for source in (environ or {}, overrides or {}):
        merged.update(source)
    values = {k: v for k, v in merged.items() if v != ""}

    def get(name: str, default: str = "") -> str:
        return values.get(name, default)

    data_dir = Path(get("K2NODE_DATA_DIR", "data"))
    tasks = _list(get("TASKS"))
    stakes = tuple(_koii_to_roe("TASK_STAKES", s) for s in _list(get("TASK_STAKES")))
    if stakes and len(stakes) != len(tasks):
        raise ConfigError(
            f"TASK_STAKES has {len(stakes)} entries but TASKS has {len(tasks)}: give one per task"
        )
    k2_url = _optional_url(
        "K2_NODE_URL",
        get("K2_NODE_URL"),
        "the http(s) URL of a k2node K2 service (`k2node k2`), or empty for the embedded K2",
    )
    try:
        slot_ms = float(get("K2NODE_SLOT_MS", str(DEFAULT_SLOT_MS)))
    except ValueError:
        slot_ms = -1
    if not 1 <= slot_ms <= 60_000:
        raise ConfigError(f"K2NODE_SLOT_MS must be 1-60000 ms, got {get('K2NODE_SLOT_MS')!r}")
    sandbox = get("K2NODE_TASK_SANDBOX", "auto")
    if sandbox not in ("auto", "required", "off"):
        raise ConfigError(f"K2NODE_TASK_SANDBOX must be auto, required or off, got {sandbox!r}")
    log_format = get("K2NODE_LOG_FORMAT", "auto")
    if log_format not in ("auto", "json", "console"):
        raise ConfigError(f"K2NODE_LOG_FORMAT must be auto, json or console, got {log_format!r}")
    ipfs_api = _optional_url(
        "IPFS_API", get("IPFS_API"), "an http(s) URL such as http://127.0.0.1:5001, or empty"
    )
    timers = get("GLOBAL_TIMERS") or get("TIMERS") or "true"
    return Settings(
        data_dir=data_dir,
        wallet_location=Path(get("WALLET_LOCATION", str(data_dir / "wallets" / "id.json"))),
        k2_node_url=k2_url,
        tasks=tasks,
        task_stakes=stakes,
        global_timers=_bool("GLOBAL_TIMERS", timers),
        server_host=get("SERVER_HOST", "127.0.0.1"),
        server_port=_port("SERVER_PORT", get("SERVER_PORT", str(DEFAULT_PORT))),
        service_url=get("SERVICE_URL"),
        environment=get("ENVIRONMENT", "development"),
        initial_staking_wallet_balance=_koii_to_roe(
            "INITIAL_STAKING_WALLET_BALANCE", get("INITIAL_STAKING_WALLET_BALANCE", "15")
        ),
        slot_ms=slot_ms,
        task_config=Path(get("K2NODE_TASK_CONFIG", str(DEFAULT_TASK_CONFIG))),
        task_entry=get("K2NODE_TASK_ENTRY", DEFAULT_TASK_ENTRY),
        admin_token=get("K2NODE_ADMIN_TOKEN"),
        task_transfers=_list(get("K2NODE_TASK_TRANSFERS")),
        ipfs_api=ipfs_api,
        log_format=log_format,
        log_level=get("K2NODE_LOG_LEVEL", "info"),
        task_sandbox=sandbox,
        http_idle_s=_positive("K2NODE_HTTP_IDLE_S", get("K2NODE_HTTP_IDLE_S", "30"), 3600),
        http_max_connections=_positive(
            "K2NODE_HTTP_MAX_CONNECTIONS", get("K2NODE_HTTP_MAX_CONNECTIONS", "512"), 1_000_000
        ),
        task_memory_mb=_positive(
            "K2NODE_TASK_MEMORY_MB", get("K2NODE_TASK_MEMORY_MB", "1024"), 1 << 20
        ),
        task_open_files=_positive(
            "K2NODE_TASK_OPEN_FILES", get("K2NODE_TASK_OPEN_FILES", "1024"), 1 << 20
        ),
        task_processes=_positive(
            "K2NODE_TASK_PROCESSES", get("K2NODE_TASK_PROCESSES", "128"), 1 << 22
        ),
        task_phase_cpu_s=_positive(
            "K2NODE_TASK_PHASE_CPU_S", get("K2NODE_TASK_PHASE_CPU_S", "300"), 7 * 86400
        ),
        task_max_body_mb=_positive(
            "K2NODE_TASK_MAX_BODY_MB", get("K2NODE_TASK_MAX_BODY_MB", "1024"), 1 << 20
        ),
        task_ws_connections=_positive(
            "K2NODE_TASK_WS_CONNECTIONS", get("K2NODE_TASK_WS_CONNECTIONS", "256"), 100_000
        ),
        task_ws_message_mb=_positive(
            "K2NODE_TASK_WS_MESSAGE_MB", get("K2NODE_TASK_WS_MESSAGE_MB", "4"), 1024
        ),
        reload=_bool("K2NODE_RELOAD", get("K2NODE_RELOAD", "false")),
        variables=values,
        auto_claim=_koii_to_roe("K2NODE_AUTO_CLAIM", get("K2NODE_AUTO_CLAIM", "0")),
    )


_TASK_INT_FIELDS = ("round_time", "audit_window", "submission_window")
_TASK_KOII_FIELDS = ("minimum_stake_amount", "total_bounty_amount", "bounty_amount_per_round")


def load_task_config(path: Path) -> dict[str, Any]:
    """A `config-task.yml` as CreateTask arguments (amounts converted to ROE)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"task config {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"task config {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"task config {path} must be a mapping of fields")
    args: dict[str, Any] = {}
    for name in ("task_name", "task_description", "task_executable_network", "task_audit_program"):
        value = raw.get(name, "")
        if not isinstance(value, str):
            raise ConfigError(f"task config {path}: {name} must be a string")
        args[name] = value
    if not args["task_name"]:
        raise ConfigError(f"task config {path}: task_name is required")
    for name in _TASK_INT_FIELDS:
        value = raw.get(name)
        if not is_int(value) or value <= 0:
            raise ConfigError(f"task config {path}: {name} must be a positive integer (slots)")
        args[name] = value
    if args["round_time"] < args["submission_window"] + args["audit_window"]:
        raise ConfigError(
            f"task config {path}: round_time must be >= submission_window + audit_window"
        )
    for name in _TASK_KOII_FIELDS:
        value = raw.get(name)
        if not (is_int(value) or isinstance(value, float)):
            raise ConfigError(f"task config {path}: {name} must be a number of KOII")
        args[name] = _koii_to_roe(name, str(value))
    failed = raw.get("allowed_failed_distributions", 0)
    if not is_int(failed) or failed < 0:
        raise ConfigError(f"task config {path}: allowed_failed_distributions must be >= 0")
    args["allowed_failed_distributions"] = failed
    args["task_metadata"] = str(raw.get("task_metadata", ""))[:64]
    space = raw.get("space", 1)
    if not (is_int(space) or isinstance(space, float)) or not 0 < space <= 10:
        raise ConfigError(f"task config {path}: space must be 0-10 (MB, the task account's size)")
    args["space"] = int(space * 1_000_000)
    return args
