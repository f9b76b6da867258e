"""A task's executable: one self-contained, reproducible zip a node runs with no network.

`k2node task build PATH` packs a task project (`config-task.yml` beside its Python module,
and the pure-Python dependencies it declares in `requirements.txt`, vendored) with a
manifest naming its entry point, the task API version it needs and the task variables it
reads. The same sources give the same bytes (sorted entries, fixed dates and modes), so the
same CID. A node runs it by adding the zip (and its `vendor/`) to the task process's path.
A JavaScript template project deploys the bundle its own webpack config wrote instead.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from k2node.contract.launch import TASK_API_VERSION, declared_variables

MANIFEST = "k2node-task.json"
CONFIG = "config-task.yml"
VENDOR = "vendor"
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
_SKIPPED_DIRS = frozenset({"__pycache__", "tests", "dist", "build", "node_modules", VENDOR})
_ENTRY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
MAX_MANIFEST_BYTES = 64 * 1024
# What pip writes beside a vendored package that depends on the machine or the moment.
_UNREPRODUCIBLE = frozenset({"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"})


class ArtifactError(Exception):
    """A task project that cannot be built, or a file that is not a task's artifact."""


@dataclass(frozen=True)
class Manifest:
    name: str
    entry: str  # module:Class inside the artifact
    api_version: int
    task_variables: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "entry": self.entry,
            "api_version": self.api_version,
            "task_variables": list(self.task_variables),
        }

    @classmethod
    def from_json(cls, raw: Any) -> Manifest:
        try:
            manifest = cls(
                str(raw["name"]),
                str(raw["entry"]),
                int(raw["api_version"]),
                tuple(str(v) for v in raw["task_variables"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{MANIFEST} is malformed") from None
        if not _ENTRY.match(manifest.entry):  # a module inside the artifact, nothing else
            raise ArtifactError(f"{MANIFEST}: entry {manifest.entry[:80]!r} is not module:Class")
        return manifest


def _entry(project: Path) -> str:
    """`module:Class` of the one CoreLogic subclass among the project's top-level modules
    (task.py in the smallest project)."""
    found = []
    for source in sorted(project.glob("*.py")):
        try:
            tree = ast.parse(source.read_bytes(), str(source))
        except (SyntaxError, ValueError) as exc:
            raise ArtifactError(f"{source} does not parse: {exc}") from None
        found += [
            f"{source.stem}:{node.name}"
            for node in tree.body
            if isinstance(node, ast.ClassDef)
            and any(
                getattr(base, "id", getattr(base, "attr", "")) == "CoreLogic" for base in node.bases
            )
        ]
    if len(found) != 1:
        raise ArtifactError(
            f"{project} must hold one CoreLogic subclass in its modules, found {len(found)}"
            + (f": {', '.join(found)}" if found else " (write it in task.py)")
        )
    return found[0]


def _config(project: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load((project / CONFIG).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{project} has no {CONFIG}") from None
    except yaml.YAMLError as exc:
        raise ArtifactError(f"{project / CONFIG} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("task_name"), str):
        raise ArtifactError(f"{project / CONFIG} must name the task (task_name)")
    return raw


def _sources(project: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(project.rglob("*")):
        relative = path.relative_to(project)
        if any(p.startswith(".") or p in _SKIPPED_DIRS for p in relative.parts[:-1]):
            continue
        if path.is_file() and (path.suffix == ".py" or relative.as_posix() == CONFIG):
            files[relative.as_posix()] = path.read_bytes().replace(b"\r\n", b"\n")
    return files


def _own_distributions() -> set[str]:
    """k2node and everything it depends on, however deep: a node has them, an artifact need
    not (and must not, lest its copies shadow the node's) carry them."""
    names: set[str] = set()
    todo = ["k2node"]
    while todo:
        name = _normalise(todo.pop())
        if name in names:
            continue
        names.add(name)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [
            re.split(r"[ <>=!~;\[(]", r, maxsplit=1)[0] for r in requirements if "extra ==" not in r
        ]
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _vendored(project: Path) -> dict[str, bytes]:
    """The project's declared dependencies, installed as pure-Python wheels only."""
    requirements = project / "requirements.txt"
    if not requirements.is_file() or not requirements.read_text().strip():
        return {}
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / VENDOR
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-compile",
                "--only-binary=:all:",
                "--target",
                str(target),
                "-r",
                str(requirements),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ArtifactError(f"cannot install {requirements}: {done.stderr.strip()[-400:]}")
        own = _own_distributions()
        for info in sorted(target.glob("*.dist-info")):
            name = _normalise(info.name.removesuffix(".dist-info").rsplit("-", 1)[0])
            wheel = (info / "WHEEL").read_text() if (info / "WHEEL").exists() else ""
            pure = "Root-Is-Purelib: true" in wheel
            if name in own:
                _remove(target, info)  # the node has it
            elif not pure:
                raise ArtifactError(
                    f"dependency {name} is compiled code: a task artifact carries pure-Python "
                    "dependencies only (or those k2node itself depends on)"
                )
        return {
            f"{VENDOR}/{p.relative_to(target).as_posix()}": p.read_bytes()
            for p in sorted(target.rglob("*"))
            if p.is_file() and _reproducible(p.relative_to(target))
        }


def _reproducible(relative: Path) -> bool:
    """Leave out what differs from machine to machine: scripts (their #! line names this
    machine's Python), compiled files, and pip's bookkeeping."""
    parts = relative.parts
    if parts[0] == "bin" or "__pycache__" in parts:
        return False
    return not (len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in _UNREPRODUCIBLE)


def _remove(target: Path, info: Path) -> None:
    """Remove a vendored distribution by its RECORD, and nothing outside the vendor folder."""
    root = target.resolve()
    for line in (info / "RECORD").read_text().splitlines():
        path = (target / line.split(",", 1)[0]).resolve()
        if path.is_relative_to(root) and path.is_file():
            path.unlink()
    shutil.rmtree(info, ignore_errors=True)


# Where a JavaScript template project's webpack config writes its bundle.
JS_BUNDLE = Path("dist") / "main.js"


def javascript_bundle(project: Path) -> Path | None:
    """The bundle a JavaScript task project deploys (a package.json beside its
    config-task.yml, no Python module); None for a Python project."""
    if not (project / "package.json").is_file() or any(project.glob("*.py")):
        return None
    _config(project)
    bundle = project / JS_BUNDLE
    if not bundle.is_file() or bundle.stat().st_size == 0:
        raise ArtifactError(
            f"{project} is a JavaScript task project: it deploys its webpacked bundle, "
            f"{JS_BUNDLE}, which is not there yet: build it first (npx webpack)"
        )
    return bundle


def build(project: Path, out: Path) -> Manifest:
    """Build the artifact of `project` at `out`; the same sources give the same bytes."""
    config = _config(project)
    manifest = Manifest(
        config["task_name"], _entry(project), TASK_API_VERSION, declared_variables(config)
    )
    files = {**_sources(project), **_vendored(project)}
    files[MANIFEST] = json.dumps(manifest.to_json(), indent=1, sort_keys=True).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w") as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, _FIXED_DATE)
            info.external_attr = 0o644 << 16
            info.create_system = 3  # the same on every system
            info.compress_type = zipfile.ZIP_STORED  # deflate's bytes differ between zlibs
            archive.writestr(info, files[name])
    return manifest


def read_manifest(path: Path) -> Manifest:
    """The manifest of an artifact; ArtifactError for anything else, or a newer API."""
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.getinfo(MANIFEST).file_size > MAX_MANIFEST_BYTES:
                raise ArtifactError(f"{path}: its {MANIFEST} is larger than a manifest is")
            with archive.open(MANIFEST) as manifest_file:
                raw = json.loads(manifest_file.read(MAX_MANIFEST_BYTES + 1))
    except ArtifactError:
        raise
    except Exception as exc:  # zipfile and zlib raise many kinds for a damaged archive
        raise ArtifactError(f"{path} is not a k2node task artifact: {exc!r}") from None
    manifest = Manifest.from_json(raw)
    if manifest.api_version > TASK_API_VERSION:
        raise ArtifactError(
            f"{path} needs task API {manifest.api_version}; this k2node has {TASK_API_VERSION}"
        )
    return manifest
