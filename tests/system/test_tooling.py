"""The developer's tools: `make lint` and the commit hooks refuse the same problems
(run on a small project with this repository's settings, not read from their files)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from servers import BIN, ROOT

# Code with one problem each, as a developer might write it, and what the tools say.
PROBLEMS = {
    "unused import": ("import os\n\n\ndef f() -> int:\n    return 1\n", "F401"),
    "unformatted": ("def f() -> int:\n    return {  'a':1 }['a']\n", "would be reformatted"),
    "type error": ('def f() -> int:\n    return "one"\n', "Incompatible return value"),
}
CLEAN = "def f() -> int:\n    return 1\n"


def project(tmp_path: Path, source: str) -> Path:
    """A project with this repository's tool settings (Makefile, pyproject.toml, the
    hooks), its virtualenv, and one module: ``source``; a git work tree, as the hooks
    need. The requirement files keep their times, and make is told the virtualenv is
    up to date: nothing is installed."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("Makefile", "pyproject.toml", ".pre-commit-config.yaml"):
        shutil.copy2(ROOT / name, root / name)
    (root / ".venv").symlink_to((ROOT / ".venv").resolve())
    (root / "sample.py").write_text(source)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "sample.py", "pyproject.toml"], cwd=root, check=True)
    return root


def make_lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-o", ".venv/.dev", "-o", ".venv/.runtime", "lint"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def hooks(root: Path) -> subprocess.CompletedProcess[str]:
    """What git runs before a commit once the hooks are installed."""
    return subprocess.run(
        [BIN / "pre-commit", "run", "--all-files", "--color", "never"],
        cwd=root,
        env=os.environ | {"PRE_COMMIT_HOME": str(root.parent / "pre-commit-home")},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_make_lint_and_the_commit_hooks_refuse_the_same_problems(
    tmp_path: Path, problem: str
) -> None:
    source, said = PROBLEMS[problem]
    root = project(tmp_path, source)
    linted = make_lint(root)
    assert linted.returncode != 0 and said in linted.stdout + linted.stderr, linted
    hooked = hooks(root)
    assert hooked.returncode != 0, hooked
    if problem == "type error":  # mypy cannot fix it: the hook says what it is
        assert said in hooked.stdout
    else:  # ruff's hooks fix what they can, and the commit is refused to show it
        assert "files were modified by this hook" in hooked.stdout
        assert make_lint(root).returncode == 0


def test_clean_code_passes_make_lint_and_the_commit_hooks(tmp_path: Path) -> None:
    root = project(tmp_path, CLEAN)
    assert make_lint(root).returncode == 0
    hooked = hooks(root)
    assert hooked.returncode == 0, hooked.stdout + hooked.stderr
    assert [line.rsplit(".", 1)[-1] for line in hooked.stdout.splitlines()] == ["Passed"] * 3


def test_nothing_in_core_imports_the_resources_or_the_schemas() -> None:
    """The machinery sits below the HTTP layer: core/ never imports resources/ or
    schemas.py (the layout's one rule of direction)."""
    offenders = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            ) + ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [
                f"{path.relative_to(ROOT)}: {name}"
                for name in names
                if name.split(".")[0] in ("resources", "schemas")
            ]
    assert offenders == []
