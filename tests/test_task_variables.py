"""Task variables: a task gets exactly the variables it declares, from .env-local or the
environment, and nothing else of the node's; one missing stops only that task."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from k2node.artifact import build
from k2node.config import load_settings
from k2node.contract.launch import declared_variables
from k2node.crypto import Keypair, load_wallet
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node.provision import deploy_task
from k2node.node.runtime import Node
from k2node.node.standing import standing
from k2node.settlement.local import LocalK2
from tests.conftest import REPO, task_file, wait_for

FAST = {"round_time": 20, "audit_window": 8, "submission_window": 8}


def _config(path: Path, tags: list[dict[str, str]]) -> Path:
    text = (REPO / "k2node" / "examples" / "config-task.yml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("requirementsTags")]
    tags_yaml = "".join(f"\n  - {{type: {t['type']}, value: {t['value']}}}" for t in tags)
    path.write_text("\n".join(lines) + "\nrequirementsTags:" + (tags_yaml or " []") + "\n")
    return path


async def test_a_task_gets_its_variables_and_a_missing_one_stops_only_its_task(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    dev_config = _config(
        tmp_path / "dev.yml",
        [
            {"type": "TASK_VARIABLE", "value": "API_KEY"},
            {"type": "GLOBAL_VARIABLE", "value": "REGION"},
        ],
    )
    dev_task = await deploy_task(fast_chain, Keypair.generate(), dev_config)
    # a second task, by CID, whose artifact declares a variable nobody set
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "k2node" / "examples" / "hello_task.py", project / "task.py")
    _config(project / "config-task.yml", [{"type": "TASK_VARIABLE", "value": "NOT_SET_ANYWHERE"}])
    build(project, tmp_path / "task.zip")
    data = tmp_path / "node"
    ipfs = EmbeddedIpfs.open(data / "ipfs")
    cid = await ipfs.publish((tmp_path / "task.zip").read_bytes())
    ipfs.close()
    ipfs_task = await deploy_task(fast_chain, Keypair.generate(), project / "config-task.yml", cid)
    env_file = tmp_path / ".env-local"
    env_file.write_text("API_KEY=from-env-local\nK2NODE_ADMIN_TOKEN=node-secret\n")
    settings = load_settings(
        env_file,
        {"REGION": "from-environment", "SECRET_OF_THE_NODE": "x", "HOME": "/root"},
        {
            "K2NODE_DATA_DIR": str(data),
            "TASKS": f"{dev_task},{ipfs_task}",
            "SERVER_PORT": "0",
            "K2NODE_TASK_ENTRY": task_file("env_task.py") + ":EnvTask",
            "K2NODE_TASK_CONFIG": str(dev_config),
        },
    )
    assert "from-env-local" not in repr(settings)  # values never shown
    with capture_logs() as logs:
        async with Node.manage(settings, fast_chain) as node, aiohttp.ClientSession() as http:
            assert set(node.tasks) == {dev_task}
            url = f"http://127.0.0.1:{node.port}/task/{dev_task}/env"
            seen: dict[str, Any] = {}

            async def env_served() -> bool:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        seen.update(await resp.json())
                return bool(seen)

            await wait_for(env_served, within=30)
    assert seen["API_KEY"] == "from-env-local" and seen["REGION"] == "from-environment"
    for name in ("SECRET_OF_THE_NODE", "K2NODE_ADMIN_TOKEN", "HOME", "NOT_SET_ANYWHERE"):
        assert name not in seen
    stopped = [e for e in logs if e["event"] == "task_not_started"]
    assert [e["task_id"] for e in stopped] == [ipfs_task]
    assert (
        "NOT_SET_ANYWHERE" in stopped[0]["error"] and "set it in .env-local" in stopped[0]["error"]
    )
    # no value of any variable reached the log
    assert not any("from-env-local" in str(e) or "from-environment" in str(e) for e in logs)
    # `k2node status` shows each task's variables as set or missing, never their values
    main = load_wallet(data / "wallets" / "id.json").pubkey
    staking = load_wallet(data / "wallets" / "staking.json").pubkey
    shown = await standing(fast_chain, main, staking, None, [dev_task, ipfs_task], settings)
    assert [t.variables for t in shown.tasks] == [
        {"API_KEY": "set", "REGION": "set"},
        {"NOT_SET_ANYWHERE": "missing"},
    ]
    assert "from-env-local" not in str(shown.to_json())


@pytest.mark.parametrize(
    ("tags", "names"),
    [
        (
            [{"type": "TASK_VARIABLE", "value": "B"}, {"type": "GLOBAL_VARIABLE", "value": "A"}],
            ("A", "B"),
        ),
        ([{"type": "CPU", "value": "4"}, {"type": "TASK_VARIABLE", "value": "X"}], ("X",)),
        (
            [
                {"type": "TASK_VARIABLE", "value": "PATH"},
                {"type": "TASK_VARIABLE", "value": "NODE_CHANNEL_FD"},
            ],
            (),
        ),
        (
            [{"type": "TASK_VARIABLE", "value": "1BAD"}, {"type": "TASK_VARIABLE", "value": "a=b"}],
            (),
        ),
        ([{"type": "TASK_VARIABLE"}, "text", None, {"type": "TASK_VARIABLE", "value": ""}], ()),
        ("not a list", ()),
        (None, ()),
    ],
)
def test_declared_variables(tags: Any, names: tuple[str, ...]) -> None:
    assert declared_variables({"requirementsTags": tags}) == names
