"""The CLI package's import graph: app -> command modules -> common, with no circle.

Checked on the source (AST), so a circle that Python happens to tolerate at import time
still fails here.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import typer

from typer.testing import CliRunner

import scaling.cli
from scaling.cli.app import LAZY, app

PACKAGE = Path(scaling.cli.__file__).parent


def _cli_imports(path: Path) -> set[str]:
    """Names of the scaling.cli modules one module imports (at any depth of the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "scaling.cli":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("scaling.cli."):
                found.add(node.module.removeprefix("scaling.cli."))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("scaling.cli.") for a in node.names if a.name.startswith("scaling.cli."))
    return found


def _graph() -> dict[str, set[str]]:
    return {path.stem: _cli_imports(path) for path in PACKAGE.glob("*.py") if path.stem != "__init__"}


def test_the_import_graph_has_no_circle() -> None:
    graph = _graph()
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != "open", f"import circle: {' -> '.join(trail + [node, nxt])}"
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])


def test_only_the_app_imports_command_modules_and_nothing_imports_the_app() -> None:
    graph = _graph()
    assert "common" in graph and graph["common"] == set(), graph["common"]
    assert all("app" not in imports for imports in graph.values()), graph
    commands = set(graph) - {"app", "common"}
    lazy = {module.removeprefix("scaling.cli.") for module, _, _ in LAZY.values()}
    assert (graph["app"] - {"common"}) | lazy == commands, "the app must assemble every command module"
    assert not graph["app"] & lazy, "a lazy command module imported at the top defeats its laziness"


def test_help_lists_lazy_commands_without_importing_them_and_their_summary_is_their_own() -> None:
    """`mcscale --help` must not import the fitting stack (scipy, pandas): it took ~10 s under load."""
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom scaling.cli.app import LAZY, app\n"
            "out = CliRunner().invoke(app, ['--help'], terminal_width=200).output\n"
            "print(' fit ' in out, sorted(m for m in ('scipy', 'pandas', 'torch', 'mlflow', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "[]"], result.stdout
    for name, (module, summary, _) in LAZY.items():
        command = typer.main.get_command(importlib.import_module(module).commands)
        assert (command.help or "").split("\n\n")[0].split(".")[0].strip() == summary.split(".")[0], name


def test_every_command_module_is_reachable_from_the_console_script() -> None:
    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for command in ("run", "resume", "ls", "show", "ui", "submit", "status", "logs", "stop", "plan", "train",
                    "models", "fit", "report", "advise"):
        assert f" {command} " in result.output, command
