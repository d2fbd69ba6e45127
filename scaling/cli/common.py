"""What every command module shares: the consoles, the exit-2 wrapper for bad input, common options.

Every command turns `UserInputError` into a one-paragraph message on stderr and exit code 2,
so bad input never shows a traceback. This module imports no command module and not the app.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, TypeVar

import typer
from rich.console import Console

from scaling.errors import UserInputError

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


@contextlib.contextmanager
def named_as_options(options: dict[str, str]) -> Iterator[None]:
    """Re-label a library `UserInputError` with the command-line option the user typed.

    The libraries name their own fields (`seq_len`, `model.d_model`); at the command line the user
    wrote `--seq-len` or `--head-dim`, so the message must name that. `options` maps a library field
    (or its first dotted part) to the option; other errors pass through unchanged.
    """
    try:
        yield
    except UserInputError as exc:
        option = options.get(exc.field) or options.get(exc.field.split(".")[0])
        if option is None:
            raise
        raise UserInputError(option, f"{exc.problem} ({exc.field})", exc.fix) from None


#: Arguments several commands share (one definition, one help text).
STUDY_ARGUMENT = typer.Argument(..., help="Study name (the spec's `name`).")
STORAGE_OPTION = typer.Option(DEFAULT_STORAGE, help="Storage location of the study: a folder or s3://bucket/prefix.")
S3_ENDPOINT_OPTION = typer.Option(None, help="Endpoint of an S3-compatible store.")
LAW_OPTION = typer.Option(None, help="Override the spec's fit.law: power or chinchilla.")
