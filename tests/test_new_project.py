"""`k2node new`: a task project whose tests pass as written, with nothing but k2node."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from k2node.authoring import class_name, write_project
from k2node.cli import main
from tests.conftest import REPO


def test_new_project_tests_pass_in_a_fresh_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["new", "demo"]) == 0
    assert "cd demo && pytest" in capsys.readouterr().out
    project = tmp_path / "demo"
    names = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert names == {
        "task.py",
        "config-task.yml",
        "pyproject.toml",
        "README.md",
        "tests/conftest.py",
        "tests/test_task.py",
    }
    # a virtual environment holding k2node (built from this checkout) and nothing else
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", f"{REPO}[testing]"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "3 passed" in run.stdout


def test_the_generated_tests_can_fail(tmp_path: Path) -> None:
    """A task whose auditors accept anything lets the liar go: its test says so."""
    project = write_project("lenient", tmp_path)
    task = project / "task.py"
    task.write_text(
        task.read_text().replace(
            "return submission_value == digest_of(", "return True or submission_value == digest_of("
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout[-3000:]
    assert "1 failed, 2 passed" in run.stdout and "test_a_liar_is_slashed" in run.stdout


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("9lives", "is not a task name"),
        ("../escape", "is not a task name"),
        ("a" * 65, "is not a task name"),
        ("", "is not a task name"),
    ],
)
def test_bad_names_are_refused(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_project(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path)
    assert main(["new", "taken"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["mine.txt"]


def test_class_names() -> None:
    assert class_name("demo") == "Demo"
    assert class_name("my-task") == "MyTask"
    assert class_name("weather_feed") == "WeatherFeed"
