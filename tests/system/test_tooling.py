"""The developer's tools: the pre-commit hooks are valid and run the same pinned tools
as `make lint`."""

from __future__ import annotations

import ast
import re
import subprocess

from ruamel.yaml import YAML

from servers import BIN, ROOT


def lint_recipe() -> str:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "the Makefile has no lint target"
    return recipe[1]


def test_the_pre_commit_config_is_valid() -> None:
    result = subprocess.run(
        [BIN / "pre-commit", "validate-config", ".pre-commit-config.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_hooks_run_the_pinned_tools_of_make_lint() -> None:
    config = YAML(typ="safe").load((ROOT / ".pre-commit-config.yaml").read_text())
    entries = {hook["id"]: hook["entry"] for repo in config["repos"] for hook in repo["hooks"]}
    assert entries == {
        "ruff": ".venv/bin/ruff check --fix",
        "ruff-format": ".venv/bin/ruff format",
        "mypy": ".venv/bin/mypy .",
    }
    recipe = lint_recipe()
    assert "$(BIN)/ruff check ." in recipe
    assert "$(BIN)/ruff format --check ." in recipe
    assert "$(BIN)/mypy ." in recipe
    pinned = (ROOT / "requirements-dev.txt").read_text()
    for tool in ("ruff", "mypy", "pre-commit"):
        assert re.search(rf"^{tool}==\S+$", pinned, re.M), f"{tool} is not pinned"


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
