"""Cluster commands: submit a study as a Ray job, and follow it (status, logs, stop).

The address is the Ray dashboard of the cluster's head node, e.g. http://HEAD:8265 (the Jobs
API is served there); without --address, $MCSCALE_RAY_ADDRESS, $RAY_API_SERVER_ADDRESS or
$RAY_ADDRESS. Token authentication follows Ray's settings: RAY_AUTH_MODE=token with
RAY_AUTH_TOKEN (or ~/.ray/auth_token) as on the cluster.
"""

from __future__ import annotations

import datetime as _dt
import sys
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from scaling.cli.common import err_console, output_console, user_errors_exit_2

commands = typer.Typer()  # merged into the `mcscale` app by scaling.cli.app

ADDRESS_HELP = ("Ray dashboard address of the cluster's head node, e.g. http://HEAD:8265 "
                "(default: $MCSCALE_RAY_ADDRESS, $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS).")


def _when(ms: Optional[int]) -> str:
    if not ms:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _duration(job: Any) -> str:
    if not job.start_time:
        return "-"
    end = job.end_time or int(_dt.datetime.now().timestamp() * 1000)
    seconds = max(0, (end - job.start_time) / 1000)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _status_text(job: Any) -> str:
    status = getattr(job.status, "value", str(job.status))
    colour = {"SUCCEEDED": "green", "FAILED": "red", "STOPPED": "yellow", "RUNNING": "cyan"}.get(status)
    return f"[{colour}]{status}[/]" if colour else status


def _address_hint(address: Optional[str]) -> str:
    return f" --address {address}" if address else ""


@commands.command("submit")
@user_errors_exit_2
def submit(spec: str = typer.Argument(..., help="Study spec (YAML), validated here before anything is sent."),
           address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
           working_dir: Optional[str] = typer.Option(
               None, help="Folder uploaded as the job's working dir (default: this mcscale checkout). Without a "
               "scaling/ package inside, the local mcscale packages are uploaded alongside."),
           pip: Optional[List[str]] = typer.Option(
               None, "--pip", help="Extra pip requirement installed for the job on the cluster (repeatable)."),
           env: Optional[List[str]] = typer.Option(
               None, "--env", help="NAME=VALUE set in the job's environment (repeatable). Visible in the dashboard, "
               "so credentials are refused: configure AWS keys and passwords on the cluster nodes instead."),
           extend: bool = typer.Option(False, "--extend", help="Let the spec extend the study it names on the "
                                       "cluster (only added architectures, segment lengths, sizes or seeds)."),
           wait: bool = typer.Option(False, "--wait", help="Follow the job's log until it ends; exit 1 unless it "
                                     "succeeds."),
           kuberay: bool = typer.Option(False, "--kuberay", help="Instead of submitting: print (or --output) a ready "
                                        "KubeRay RayJob manifest that runs the spec, for `kubectl apply -f`."),
           output: Optional[str] = typer.Option(None, "--output", "-o", help="With --kuberay: write the manifest to "
                                                "this file instead of stdout."),
           cluster_template: Optional[str] = typer.Option(
               None, help="With --kuberay: the RayCluster manifest whose shape the job's cluster takes (default: "
               "cluster/kuberay/raycluster.yaml of this checkout)."),
           image: Optional[str] = typer.Option(None, help="With --kuberay: container image for every Ray pod "
                                               "(default: the template's)."),
           namespace: Optional[str] = typer.Option(None, help="With --kuberay: Kubernetes namespace of the RayJob "
                                                   "(default: the template's)."),
           spec_in_image: Optional[str] = typer.Option(
               None, help="With --kuberay: run this spec path inside the image instead of carrying the spec's text "
               "in the job.")) -> None:
    """Submit a study to a Ray cluster as a Ray job; prints the job id. With --kuberay, print a RayJob manifest instead.

    Ray Jobs API route: the project is uploaded as the job's working_dir; the head node runs `python -m scaling run
    SPEC --address auto`. Follow the job with `mcscale status JOB_ID` and `mcscale logs JOB_ID --follow`.

    KubeRay route: `mcscale submit SPEC --kuberay -o job.yaml && kubectl apply -f job.yaml` creates a Ray cluster for
    the study (the template's CPU head and GPU workers), runs it, and deletes the cluster when the study ends. The
    manifest is checked against KubeRay's CRD schema first; the MLflow URI and S3 credentials come from the
    mcscale-study-env Secret (cluster/kuberay/secret.yaml).

    The spec's storage is resolved on the cluster: use s3://bucket/prefix (an absolute path is the head node's disk).
    """
    from scaling.study.submit import job_logs, job_status, submit_study

    def note(message: str) -> None:
        style = "yellow" if message.startswith("warning") else "dim"
        err_console.print(f"[{style}]{message}[/]", highlight=False, soft_wrap=True)

    _check_route(kuberay, {"--address": address, "--working-dir": working_dir, "--pip": pip, "--env": env,
                           "--wait": wait, "--extend": extend}, {"--output": output, "--cluster-template": cluster_template,
                                             "--image": image, "--namespace": namespace,
                                             "--spec-in-image": spec_in_image})
    from scaling.spec import load_spec
    from scaling.study.cost import preflight

    note(f"plan: {preflight(load_spec(spec))}")  # the cost before paying; exit 2 if a trial cannot fit its GPUs
    if kuberay:
        _write_rayjob(spec, output, cluster_template, image, namespace, spec_in_image, note)
        return
    job_id = submit_study(spec, address, working_dir=working_dir, extra_pip=pip or None, env=env or None, warn=note,
                          extend=extend)
    print(job_id, flush=True)  # stdout carries only the id: JOB=$(mcscale submit spec.yaml ...)
    hint = _address_hint(address)
    if not wait:
        err_console.print(f"Submitted as job [bold]{job_id}[/]. Follow it with `mcscale logs {job_id} --follow{hint}`"
                          f" or `mcscale status {job_id}{hint}`.", highlight=False, soft_wrap=True)
        return
    err_console.print(f"Submitted as job [bold]{job_id}[/]; following its log (Ctrl-C stops following, not the "
                      "job).", highlight=False, soft_wrap=True)
    try:
        job_logs(address, job_id, follow=True)
    except KeyboardInterrupt:
        err_console.print(f"Stopped following; the job goes on. `mcscale stop {job_id}{hint}` stops it.")
        raise typer.Exit(130)
    info = job_status(address, job_id)
    status = getattr(info.status, "value", str(info.status))
    err_console.print(f"job {job_id}: {_status_text(info)} {info.message or ''}", highlight=False, soft_wrap=True)
    if status != "SUCCEEDED":
        raise typer.Exit(1)


def _check_route(kuberay: bool, jobs_api_only: dict[str, Any], kuberay_only: dict[str, Any]) -> None:
    """Refuse options of the other route rather than silently ignoring them."""
    from scaling.errors import UserInputError

    wrong = [name for name, value in (jobs_api_only if kuberay else kuberay_only).items() if value]
    if wrong:
        raise UserInputError(wrong[0], f"{wrong[0]} only applies {'without' if kuberay else 'with'} --kuberay",
                             "drop it" + (" (a RayJob manifest is applied with kubectl, not sent to an address)"
                                          if kuberay else ", or add --kuberay to generate a RayJob manifest"))


def _write_rayjob(spec: str, output: Optional[str], cluster_template: Optional[str], image: Optional[str],
                  namespace: Optional[str], spec_in_image: Optional[str], note: Any) -> None:
    from pathlib import Path

    from scaling.errors import UserInputError
    from scaling.study.submit import kuberay_rayjob, rayjob_yaml

    job, notes = kuberay_rayjob(spec, cluster_template, image=image, namespace=namespace, spec_in_image=spec_in_image)
    text = rayjob_yaml(job)
    for message in notes:
        note(message)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        Path(output).expanduser().write_text(text)
    except OSError as exc:
        raise UserInputError("--output", f"cannot write {output}: {exc.strerror or exc}",
                             "pass a path in a folder you can write to") from None
    err_console.print(f"Wrote RayJob {job['metadata']['name']} to {output}. Apply it with `kubectl apply -f {output}`.",
                      highlight=False, soft_wrap=True)


@commands.command("status")
@user_errors_exit_2
def status(job_id: Optional[str] = typer.Argument(None, help="Job id printed by `mcscale submit` (default: list "
                                                  "the cluster's jobs)."),
           address: Optional[str] = typer.Option(None, help=ADDRESS_HELP)) -> None:
    """Show one job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), or a table of the cluster's jobs."""
    from scaling.study.submit import META_STORAGE, META_STUDY, job_status, list_jobs

    console = output_console()
    if job_id is not None:
        info = job_status(address, job_id)
        meta = info.metadata or {}
        console.print(f"{info.submission_id or job_id} {_status_text(info)}", highlight=False)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for label, value in (("study", meta.get(META_STUDY, "-")), ("storage", meta.get(META_STORAGE, "-")),
                             ("message", info.message or "-"), ("started", _when(info.start_time)),
                             ("ended", _when(info.end_time)), ("duration", _duration(info)),
                             ("entrypoint", info.entrypoint)):
            grid.add_row(label, str(value))
        console.print(grid, highlight=False)
        return
    jobs = list_jobs(address)
    table = Table(title=f"Ray jobs ({len(jobs)})")
    for col in ("job id", "status", "study", "started", "duration", "message"):
        table.add_column(col)
    for job in jobs:
        message = (job.message or "-").strip().splitlines()[0] if job.message else "-"
        table.add_row(job.submission_id or job.job_id or "-", _status_text(job),
                      (job.metadata or {}).get(META_STUDY, "-"), _when(job.start_time), _duration(job),
                      message[:80])
    console.print(table, highlight=False)


@commands.command("logs")
@user_errors_exit_2
def logs(job_id: str = typer.Argument(..., help="Job id printed by `mcscale submit`."),
         address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends.")) -> None:
    """Print a job's driver log (the study's progress and summary); --follow streams it."""
    from scaling.study.submit import job_logs

    if not follow:
        sys.stdout.write(job_logs(address, job_id) or "")
        sys.stdout.flush()
        return
    try:
        job_logs(address, job_id, follow=True)
    except KeyboardInterrupt:
        raise typer.Exit(130)


@commands.command("stop")
@user_errors_exit_2
def stop(job_id: str = typer.Argument(..., help="Job id printed by `mcscale submit`."),
         address: Optional[str] = typer.Option(None, help=ADDRESS_HELP)) -> None:
    """Stop a running job; finished trials stay recorded and `mcscale submit` of the same spec resumes it."""
    from scaling.study.submit import stop_job

    if stop_job(address, job_id):
        print(f"Stopping job {job_id}.")
    else:
        print(f"Job {job_id} had already ended.")
