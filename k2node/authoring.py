"""`k2node new NAME`: a task project to start from, its tests passing as written."""

from __future__ import annotations

import keyword
import re
import sys
from importlib import resources
from pathlib import Path
from string import Template

TEMPLATE = "k2node.templates"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def class_name(name: str) -> str:
    """`my-task` -> `MyTask`: the task's CoreLogic subclass."""
    found = "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", name) if part)
    return found if not keyword.iskeyword(found) else found + "Task"


def write_project(name: str, parent: Path) -> Path:
    """Write the project `name` in `parent`/`name`; its folder. ValueError when the name is
    not one or the folder is not empty."""
    if not _NAME.match(name):
        raise ValueError(
            f"{name!r} is not a task name: a letter, then letters, digits, - or _ (at most 64)"
        )
    folder = parent / name
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} already exists and is not empty")
    words = {
        "name": name,
        "cls": class_name(name),
        "title": name.replace("-", " ").replace("_", " ").capitalize(),
    }
    root = resources.files(TEMPLATE) / "task"
    for source, relative in _templates(root, Path()):
        target = folder / relative.with_suffix("")  # drop .tmpl
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(source.read_text()).substitute(words))
    return folder


def _templates(
    node: resources.abc.Traversable, at: Path
) -> list[tuple[resources.abc.Traversable, Path]]:
    found = []
    for child in node.iterdir():
        if child.is_dir():
            found += _templates(child, at / child.name)
        elif child.name.endswith(".tmpl"):
            found.append((child, at / child.name))
    return found


def new_project(name: str) -> int:
    try:
        folder = write_project(name, Path.cwd())
    except (ValueError, OSError) as exc:
        print(f"k2node new: {exc}", file=sys.stderr)
        return 2
    print(f"wrote the task project {folder}: cd {name} && pytest")
    return 0
