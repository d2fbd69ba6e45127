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

#: Loggers of libraries mcscale runs whose INFO lines and warnings are not about the user's study:
#: MLflow's and alembic's database creation/migration notes, Ray's notice that the embedded
#: loopback cluster runs without token authentication (it listens on 127.0.0.1 only).
QUIET_LOGGERS = ("mlflow", "alembic", "ray._private.authentication.authentication_token_setup")
#: Warnings raised inside libraries (deprecations in their own dependencies), by module pattern.
QUIET_WARNING_MODULES = r"(mlflow|starlette|sqlalchemy|alembic|pydantic|ray|uvicorn|fastapi|google|pkg_resources)(\.|$)"
VERBOSE_ENV = "MCSCALE_VERBOSE"  # set by --verbose, read by child processes (the MLflow UI)


def verbose() -> bool:
    """Whether `mcscale --verbose` asked to see the libraries' own logs and warnings."""
    import os

    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_libraries(show: bool = False) -> None:
    """Keep library chatter that is not about the study off stderr, unless `show` (--verbose).

    Why here and not by a blanket filter: mcscale's own warnings (and any warning raised in
    mcscale code) are about the user's study and must stay visible; only loggers and warnings
    that belong to the libraries are lowered. Child processes inherit the choice via
    `VERBOSE_ENV` and PYTHONWARNINGS."""
    import logging
    import os
    import warnings

    if show:
        os.environ[VERBOSE_ENV] = "1"
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its loggers from this when imported
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if name in ("mlflow", "alembic") else logging.ERROR)
    warnings.filterwarnings("ignore", module=QUIET_WARNING_MODULES)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=QUIET_WARNING_MODULES)
DEFAULT_STORAGE = "./mcscale-runs"  # where the embedded default keeps studies (DESIGN.md)


def output_console() -> Console:
    """stdout console; 200 columns wide when piped, so tables and verdicts are not folded to 80, unless
    the user set COLUMNS (their terminal's or pager's width wins: `COLUMNS=120 mcscale advise ...`)."""
    import os

    console = Console()
    if console.is_terminal:
        return console
    columns = os.environ.get("COLUMNS", "")
    return Console(width=int(columns) if columns.isdigit() and int(columns) >= 40 else 200)
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
