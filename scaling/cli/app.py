"""The `mcscale` Typer app: every command group's commands merged into one flat command set.

Command modules declare their commands on their own `typer.Typer()`; adding those without a
name merges them (`mcscale run`, not `mcscale study run`). This is the only module that
imports the command modules, and none of them imports it.

Why some are imported lazily (`LAZY`): `mcscale --help` and every other command should not pay
for a module that imports the whole fitting stack (scipy, pandas: about a second, ten under
load) at the top. A lazy command is listed in the help from its one-line summary here and only
imported when it runs or its own --help is asked for.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click
import typer
from typer.core import TyperGroup

from scaling.cli import advise, models, plan, report, study, submit, train
from scaling.cli.common import quiet_libraries

#: command name -> (module declaring it on `commands`, its one-line summary, the command it is listed after)
LAZY: dict[str, tuple[str, str, str]] = {
    "fit": ("scaling.cli.fit", "Fit a scaling law (Hoffmann et al.'s robust fit, batched over the start grid) to a "
            "table.", "models"),
}


class LazyCommands(TyperGroup):
    """A TyperGroup that imports the modules in `LAZY` only when one of their commands is used."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = [n for n in super().list_commands(ctx) if n not in LAZY]
        for name, (_, _, after) in LAZY.items():
            names.insert(names.index(after) + 1 if after in names else len(names), name)
        return names

    def format_help(self, ctx: click.Context, formatter: Any) -> None:
        self._listing = True  # the command list needs only the summaries
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY and cmd_name not in self.commands:
            module_name, summary, _ = LAZY[cmd_name]
            if self._listing:
                return click.Command(cmd_name, help=summary, short_help=summary)
            module = importlib.import_module(module_name)
            command = typer.main.get_command(module.commands)
            if isinstance(command, click.Group):
                command = command.get_command(ctx, cmd_name)
            self.commands[cmd_name] = command
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="mcscale",
    cls=LazyCommands,
    help=(
        "Scaling-law studies of Memory Caching (MC) recurrent models against Transformers: "
        "plan and run sweeps on Ray, track them in MLflow, fit and extrapolate scaling laws."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for group in (study, submit, plan, train, models, report, advise):
    app.add_typer(group.commands)


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", help="Also show the libraries' own log lines and "
                                          "warnings (MLflow, Ray, the web server of `mcscale ui`), hidden by default.")
             ) -> None:
    """Scaling-law studies of Memory Caching (MC) recurrent models against Transformers: plan and run sweeps on
    Ray, track them in MLflow, fit and extrapolate scaling laws."""
    quiet_libraries(show=verbose)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
