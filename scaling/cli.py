"""The `mcscale` command line: thin wrappers that parse, call the library and print.

Every command turns `UserInputError` into a one-paragraph message on stderr and exit code 2,
so bad input never shows a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console

from scaling.errors import UserInputError

app = typer.Typer(
    name="mcscale",
    help=(
        "Scaling-law studies of Memory Caching (MC) recurrent models against Transformers: "
        "plan and run sweeps on Ray, track them in MLflow, fit and extrapolate scaling laws."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

err_console = Console(stderr=True)
DEFAULT_STORAGE = "./mcscale-runs"  # where the embedded default keeps studies (DESIGN.md)


def output_console() -> Console:
    """stdout console; 200 columns wide when piped, so tables and verdicts are not folded to 80."""
    console = Console()
    return console if console.is_terminal else Console(width=200)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors_exit_2(func: F) -> F:
    """Report `UserInputError` as a plain message and exit 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserInputError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _register_subcommands() -> None:
    """Import command modules so their `@app.command()` decorators attach to `app`."""
    from scaling import (cli_advise, cli_fit, cli_models, cli_plan, cli_report, cli_study,  # noqa: F401
                         cli_submit, cli_train)


def main() -> None:
    """Console-script entry point."""
    _register_subcommands()
    app()


if __name__ == "__main__":
    sys.exit(main())
