"""Live terminal view of a running study: a table of trials and an overall bar with ETA."""

from __future__ import annotations

import time
from typing import Any, Callable

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

MAX_ROWS = 24  # while the study runs; its last frame shows every trial
#: "segments": the number of segments N = L / C a Memory Caching model cuts its sequence into (1: none)
COLUMNS = ("trial", "state", "arch", "size", "segments", "step", "loss")


def size_value(label: str) -> float:
    """A size label's value for sorting (12K after 3K); unreadable labels last."""
    from scaling.models.ladder import parse_size

    try:
        return parse_size(label)
    except Exception:  # noqa: BLE001 - a label that is no size sorts last, never breaks the display
        return float("inf")

# The live display the driver's bookkeeping reports to (None: no display). Held here, not in the
# driver, so that the driver imports this module and this module imports nothing of the driver.
_HOOK: Callable[[Any], None] | None = None


def notify(book: Any) -> None:
    """Called by the driver (scaling.study.tune) whenever its bookkeeping changes."""
    if _HOOK is not None:
        _HOOK(book)


class StudyProgress:
    """Context manager that renders the driver's bookkeeping as it changes (at most 4 times a second)."""

    def __init__(self, console: Console, title: str, planned_steps: dict[str, int]) -> None:
        self.console, self.title = console, title
        self.planned_steps = dict(planned_steps)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TextColumn("{task.fields[trials]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console)
        self.task = self.progress.add_task(title, total=max(1, sum(self.planned_steps.values())), trials="")
        self.live = Live(self._render(None), console=console, refresh_per_second=4, transient=False)
        self._last = 0.0
        self._book: Any = None

    def __enter__(self) -> "StudyProgress":
        global _HOOK
        self.live.__enter__()
        _HOOK = self.update
        return self

    def __exit__(self, *exc: Any) -> None:
        global _HOOK
        _HOOK = None
        self.live.update(self._render(self._book, final=True))  # the frame left on screen: every trial
        self.live.__exit__(*exc)

    def add_steps(self, extra: dict[str, int]) -> None:
        self.planned_steps.update(extra)
        self.progress.update(self.task, total=max(1, sum(self.planned_steps.values())))

    def update(self, book: Any) -> None:
        self._book = book
        now = time.monotonic()
        if now - self._last < 0.25 and not book.finished:
            return
        self._last = now
        self.live.update(self._render(book))

    def _render(self, book: Any, final: bool = False) -> Group:
        table = Table(title=self.title, expand=False)
        for col in COLUMNS:
            table.add_column(col, justify="right" if col in ("segments", "step", "loss") else "left")
        done_steps, finished = 0, 0
        views = list(book.views.values()) if book is not None else []
        for view in views:
            total = view.total_steps or self.planned_steps.get(view.trial_key, 0)
            ended = view.state not in ("RUNNING", "PENDING")
            done_steps += total if ended else view.step
            finished += ended
        # running trials first, then by architecture and size by value (3K < 12K, not as text); the final
        # frame stays on screen after the study ends, so it shows every trial
        ordered = sorted(views, key=lambda v: (v.state not in ("RUNNING",), v.arch, size_value(v.size_label), v.trial_key))
        shown = ordered if final else ordered[:MAX_ROWS]
        for view in shown:
            loss = "-" if view.loss != view.loss else f"{view.loss:.4f}"
            total = view.total_steps or self.planned_steps.get(view.trial_key, 0)
            table.add_row(view.trial_key, view.state, view.arch, view.size_label, str(view.n_segments),
                          f"{view.step}/{total}", loss)
        if len(views) > len(shown):
            table.caption = f"{len(views) - MAX_ROWS} more trials not shown"
        self.progress.update(self.task, completed=done_steps,
                             trials=f"{finished}/{len(self.planned_steps)} trials done")
        return Group(table, self.progress)
