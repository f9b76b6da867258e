"""The shape of the tree: imports point one way, and every wire name has one owner."""

from __future__ import annotations

import ast
from pathlib import Path

from k2node.contract.methods import Method
from k2node.node.http.namespace_rpc import METHODS
from tests.conftest import REPO

PACKAGE = REPO / "k2node"

# What each part may import besides itself (K2-CONTRACT's two sides, DESIGN's layers);
# `logs` imports no other part, and every part's loggers come from it.
ALLOWED = {
    "codec": set(),
    "b58": set(),
    "memory_db": set(),
    "contract": {"codec", "logs"},
    "crypto": {"contract", "b58"},
    "store": {"codec", "memory_db"},
    "logs": set(),
    "http_errors": {"codec", "logs"},
    "eventloop": set(),
    "progress": set(),
    "config": {"contract"},
    "artifact": {"contract"},
    "ipfs": {"store", "b58", "logs"},
    "settlement": {"codec", "contract", "crypto", "b58", "store", "http_errors", "logs"},
    "task": {
        "codec",
        "b58",
        "contract",
        "crypto",
        "store",
        "logs",
        "http_errors",
        "artifact",
        "eventloop",
    },
    "examples": {"task", "contract", "crypto"},
    "node": {
        "codec",
        "eventloop",
        "progress",
        "contract",
        "crypto",
        "store",
        "config",
        "ipfs",
        "settlement",
        "http_errors",
        "artifact",
        "logs",
    },
    # an author's tests and simulations: the node's own parts around the task's code
    "testing": {
        "progress",
        "contract",
        "config",
        "crypto",
        "store",
        "ipfs",
        "settlement",
        "node",
        "task",
        "logs",
    },
    "authoring": set(),
    "devnet": {"config", "crypto", "node", "settlement"},
    "operator": {"config", "contract", "crypto", "node", "settlement", "store"},
    "templates": set(),
    "cli": {
        "progress",
        "operator",
        "devnet",
        "testing",
        "authoring",
        "config",
        "crypto",
        "logs",
        "store",
        "ipfs",
        "settlement",
        "node",
        "artifact",
        "eventloop",
    },
    "__main__": {"cli"},
}


def _part(module: str) -> str:
    """`k2node.node.http.api` -> `node`."""
    return module.split(".")[1] if "." in module else ""


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "k2node":
            found += [f"k2node.{a.name}" for a in node.names if not a.name.startswith("_")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("k2node"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("k2node")]
    return found


def _modules() -> dict[str, Path]:
    return {
        ".".join(("k2node", *p.relative_to(PACKAGE).with_suffix("").parts)): p
        for p in PACKAGE.rglob("*.py")
    }


def test_imports_point_one_way() -> None:
    wrong = []
    for module, path in _modules().items():
        part = _part(module)
        if part in ("", "__init__"):
            continue
        for target in _imports(path):
            other = _part(target)
            if other in ("", part):  # the package root (its version) or itself
                continue
            if other not in ALLOWED[part]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_the_node_parts_do_not_reach_up_into_its_http_surface() -> None:
    for module, path in _modules().items():
        if not module.startswith("k2node.node.") or module.startswith("k2node.node.http"):
            continue
        if module == "k2node.node.runtime":  # it wires the surface to the parts
            continue
        assert not [t for t in _imports(path) if t.startswith("k2node.node.http")], module


def test_every_wire_name_is_served_and_nothing_else() -> None:
    assert set(METHODS) == {m.value for m in Method}


def test_the_sdk_sends_only_named_wire_methods() -> None:
    """Every `call(...)` in the task SDK names its method as `Method.X`, never a string, so a
    typo is a type error (mypy) and not a 422 at run time."""
    sent = set()
    for path in (PACKAGE / "task").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr != "call" or not node.args:
                continue
            first = node.args[0]
            assert isinstance(first, ast.Attribute), f"{path.name}:{node.lineno}"
            assert isinstance(first.value, ast.Name) and first.value.id == "Method"
            sent.add(first.attr)
    assert len(sent) > 20
    assert {Method[name].value for name in sent} <= set(METHODS)


def test_no_module_is_over_about_400_lines() -> None:
    long = {
        p.name: n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 420
    }
    assert long == {}
