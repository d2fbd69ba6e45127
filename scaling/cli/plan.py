"""`mcscale plan SPEC`: every trial a spec would run, what it costs, and whether it fits its GPUs."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from scaling.cli.common import output_console, user_errors_exit_2
from scaling.errors import UserInputError
from scaling.formatting import byte_size, sci
from scaling.spec import load_spec

commands = typer.Typer()  # merged into the `mcscale` app by scaling.cli.app


def rung_size(label: str, params_nonembed: int) -> str:
    """'48K (47.6K)': the rung's name and the non-embedding parameters of the model it builds.

    Why both: series of one rung are compared as if equal in size; the ladder keeps them within
    10% of the target where its grid allows, and the plan shows where it could not.
    """
    from scaling.models.ladder import format_count

    return f"{label} ({format_count(params_nonembed)})"


@commands.command("plan")
@user_errors_exit_2
def plan(spec: str = typer.Argument(..., help="Study spec (YAML), e.g. studies/paper-ladder.yaml."),
         mfu: Optional[float] = typer.Option(None, help="Assumed model FLOP utilisation for device-hours "
                                             "(default: the spec's trainer.assumed_mfu)."),
         memory: bool = typer.Option(True, "--memory/--no-memory", help="Estimate memory per GPU (a meta-device "
                                     "forward pass per rung; a few seconds per large model).")) -> None:
    """Print every trial the spec would run with parameters, tokens, FLOPs, device-hours and memory per
    GPU; exit 2 naming the trial and the fix when one cannot fit its GPUs."""
    if mfu is not None and not 0 < mfu <= 1:
        raise UserInputError("--mfu", f"must be in (0, 1], got {mfu}", "pass e.g. --mfu 0.35")
    study = load_spec(spec)
    from scaling.study.cost import check_fits, study_costs, total_line
    from scaling.study.plan import plan_ladder, plan_tune, tune_series

    from scaling.study.recall import plan_recall

    trials = plan_recall(study) + plan_ladder(study)
    if study.tune is not None:
        trials = [plan_tune(study, a, s) for a, s in tune_series(study)] + trials
    costs = study_costs(study, trials, mfu, with_memory=memory)
    console = output_console()
    table = Table(title=f"plan of {study.name}")
    for column in ("trial", "size (actual)", "shape", "tokens", "train FLOPs", "GPUs", "micro", "ckpt", "mem/GPU",
                   "GPU mem", "fits", "GPU-hours"):
        table.add_column(column, justify="left" if column in ("trial", "shape") else "right")
    for c in costs:
        cfg, res = c.trial.config, c.trial.resources
        table.add_row(
            c.trial.trial_id + (f" (x{c.count})" if c.count > 1 else ""), rung_size(c.trial.size_label, c.params_nonembed),
            f"{cfg.model.n_layers}x{cfg.model.d_model}", sci(c.tokens), sci(c.training_flops),
            f"{res.gpus:g}" + (f" ({cfg.workers}w)" if cfg.workers > 1 else "") if res else "0",
            str(cfg.micro_batch_size()), "on" if cfg.activation_checkpointing else "-",
            byte_size(c.memory_per_worker_bytes) if c.memory_per_worker_bytes is not None else "-",
            byte_size(c.gpu_memory_bytes) if c.gpu_memory_bytes is not None else "-",
            {True: "yes", False: "[red]NO[/]", None: "-"}[c.fits],
            f"{c.device_hours * c.count:,.2f}" if c.device_hours is not None else "-")
    console.print(table)
    console.print(f"total: {total_line(study, costs, mfu)}", soft_wrap=True)
    check_fits(costs)
