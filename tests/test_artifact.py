"""`k2node task build`: one reproducible zip per task project, that a task process runs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from k2node.artifact import MANIFEST, ArtifactError, build, read_manifest
from tests.conftest import REPO

TAGS = """requirementsTags:
  - type: TASK_VARIABLE
    value: "SECRET_WEBSITE"
    description: "a variable the task reads"
  - type: CPU
    value: "4-core"
"""


def _project(where: Path) -> Path:
    """A copy of the bundled example as a task project: task.py and config-task.yml."""
    where.mkdir(parents=True)
    shutil.copy(REPO / "k2node" / "examples" / "hello_task.py", where / "task.py")
    example = (REPO / "k2node" / "examples" / "config-task.yml").read_text()
    config = example.replace("requirementsTags: []\n", TAGS)
    (where / "config-task.yml").write_text(config)
    return where


def _cli_build(project: Path, out: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "k2node", "task", "build", str(project), "-o", str(out)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return done.stdout.strip().rsplit(" ", 1)[1]  # the CID, last


def test_the_same_sources_give_the_same_bytes_and_cid(tmp_path: Path) -> None:
    first = _project(tmp_path / "a" / "project")
    cid_a = _cli_build(first, tmp_path / "a.zip")
    time.sleep(1.1)  # a later build, in another folder, with other file times
    second = _project(tmp_path / "b" / "elsewhere")
    (second / "__pycache__").mkdir()
    (second / "__pycache__" / "task.cpython-311.pyc").write_bytes(b"stale")
    os.utime(second / "task.py", (1, 1))
    cid_b = _cli_build(second, tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert cid_a == cid_b and cid_a.startswith("Qm")
    manifest = read_manifest(tmp_path / "a.zip")
    assert manifest.entry == "task:HelloTask" and manifest.api_version == 1
    assert manifest.task_variables == ("SECRET_WEBSITE",)
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        assert archive.namelist() == ["config-task.yml", MANIFEST, "task.py"]


def _load(artifact: Path) -> subprocess.CompletedProcess[str]:
    """A task process's way of loading it, in a fresh interpreter."""
    code = (
        "import sys; from k2node.task.runner import load_entry; "
        "print(type(load_entry(sys.argv[1])).__name__)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(artifact)], capture_output=True, text=True, cwd=REPO
    )


def test_a_task_process_loads_the_artifact_and_refuses_a_newer_api(tmp_path: Path) -> None:
    artifact = tmp_path / "task.zip"
    build(_project(tmp_path / "p"), artifact)
    loaded = _load(artifact)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "HelloTask", loaded.stderr
    newer = tmp_path / "newer.zip"
    with zipfile.ZipFile(artifact) as source, zipfile.ZipFile(newer, "w") as out:
        for name in source.namelist():
            data = source.read(name)
            if name == MANIFEST:
                data = json.dumps(json.loads(data) | {"api_version": 99}).encode()
            out.writestr(name, data)
    refused = _load(newer)
    assert refused.returncode != 0 and "needs task API 99" in refused.stderr
    (tmp_path / "page.zip").write_text("<html>not found</html>")
    with pytest.raises(ArtifactError, match="not a k2node task artifact"):
        read_manifest(tmp_path / "page.zip")


def _wheel(folder: Path, name: str, tag: str, pure: bool) -> None:
    """A minimal wheel, written by hand so that the test needs no index."""
    files = {
        f"{name}/__init__.py": f"VALUE = {len(name)}\n".encode(),
        f"{name}-1.0.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode()
        ),
        f"{name}-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\n"
            f"Root-Is-Purelib: {str(pure).lower()}\nTag: {tag}\n"
        ).encode(),
    }

    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = [f"{path},sha256={digest(data)},{len(data)}" for path, data in files.items()]
    files[f"{name}-1.0.dist-info/RECORD"] = (
        "\n".join([*record, f"{name}-1.0.dist-info/RECORD,,"]) + "\n"
    ).encode()
    with zipfile.ZipFile(folder / f"{name}-1.0-{tag}.whl", "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)


def test_pure_python_dependencies_are_vendored_and_compiled_ones_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "tinydep", "py3-none-any", pure=True)
    _wheel(wheels, "fastdep", "cp311-cp311-linux_x86_64", pure=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    project = _project(tmp_path / "p")
    (project / "task.py").write_text(
        (project / "task.py").read_text() + "\nimport tinydep\nVENDORED = tinydep.VALUE\n"
    )
    (project / "requirements.txt").write_text("tinydep\n")
    artifact = tmp_path / "task.zip"
    build(project, artifact)
    with zipfile.ZipFile(artifact) as archive:
        names = archive.namelist()
    assert "vendor/tinydep/__init__.py" in names
    # nothing that names this machine or this moment: pip's bookkeeping stays out
    assert not [n for n in names if n.endswith(("/RECORD", "/INSTALLER", "/REQUESTED"))]
    loaded = _load(artifact)  # the vendored module imports from inside the zip
    assert loaded.returncode == 0 and loaded.stdout.strip() == "HelloTask", loaded.stderr
    (project / "requirements.txt").write_text("tinydep\nfastdep\n")
    with pytest.raises(ArtifactError, match="fastdep is compiled code"):
        build(project, tmp_path / "refused.zip")


def test_the_bundled_examples_folder_builds_as_it_is(tmp_path: Path) -> None:
    manifest = build(REPO / "k2node" / "examples", tmp_path / "example.zip")
    assert manifest.entry == "hello_task:HelloTask" and manifest.name == "k2node hello"


def test_projects_that_cannot_be_built_say_why(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match=r"no config-task\.yml"):
        build(empty, tmp_path / "x.zip")
    (empty / "config-task.yml").write_text("task_name: x\n")
    with pytest.raises(ArtifactError, match=r"found 0 \(write it in task\.py\)"):
        build(empty, tmp_path / "x.zip")
    (empty / "task.py").write_text("class A(CoreLogic):\n    pass\n")
    (empty / "other.py").write_text("class B(k2node.task.CoreLogic):\n    pass\n")
    with pytest.raises(ArtifactError, match="found 2: other:B, task:A"):
        build(empty, tmp_path / "x.zip")
    (empty / "config-task.yml").write_text("{not: [yaml")
    with pytest.raises(ArtifactError, match="not valid YAML"):
        build(empty, tmp_path / "x.zip")


def test_a_damaged_or_hostile_manifest_is_refused_by_name(tmp_path: Path) -> None:
    artifact = tmp_path / "task.zip"
    build(_project(tmp_path / "p"), artifact)
    damaged = bytearray(artifact.read_bytes())
    at = damaged.find(b'"entry"')
    damaged[at : at + 7] = b'"ENTRY"'  # a changed byte: the stored CRC no longer matches
    (tmp_path / "damaged.zip").write_bytes(bytes(damaged))
    with pytest.raises(ArtifactError, match="not a k2node task artifact"):
        read_manifest(tmp_path / "damaged.zip")
    for entry in ("../evil.py:Task", "/abs/path.py:Task", "task"):
        hostile = tmp_path / "hostile.zip"
        with zipfile.ZipFile(artifact) as source, zipfile.ZipFile(hostile, "w") as out:
            for name in source.namelist():
                data = source.read(name)
                if name == MANIFEST:
                    data = json.dumps(json.loads(data) | {"entry": entry}).encode()
                out.writestr(name, data)
        with pytest.raises(ArtifactError, match="is not module:Class"):
            read_manifest(hostile)
