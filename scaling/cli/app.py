"""The `mcscale` Typer app: every command group's commands merged into one flat command set.

Command modules declare their commands on their own `typer.Typer()`; adding those without a
name merges them (`mcscale run`, not `mcscale study run`). This is the only module that
imports the command modules, and none of them imports it.
"""

from __future__ import annotations

import sys

import typer

from scaling.cli import advise, fit, models, plan, report, study, submit, train

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
for group in (study, submit, plan, train, models, fit, report, advise):
    app.add_typer(group.commands)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
