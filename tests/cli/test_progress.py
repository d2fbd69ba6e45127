"""The live trial table of `mcscale run` (scaling.study.progress): sizes sorted by value, every trial
in the frame left on screen, columns named for what they hold."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from scaling.study.progress import COLUMNS, MAX_ROWS, StudyProgress

SIZES = ["12K", "24K", "3K", "48K", "6K"]


def _book(n_archs: int) -> SimpleNamespace:
    views = {}
    for a in range(n_archs):
        for size in SIZES:
            key = f"ladder-arch{a}-{size.lower()}-s0"
            views[key] = SimpleNamespace(trial_key=key, arch=f"arch{a}", size_label=size, n_segments=4,
                                         state="TERMINATED", step=10, total_steps=10, loss=2.5)
    return SimpleNamespace(views=views, finished={k: "completed" for k in views})


def _rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if "ladder-arch" in line]


def test_sizes_sort_by_value_and_the_last_frame_hides_no_trial():
    book = _book(n_archs=6)  # 30 trials: more than the running display shows
    assert len(book.views) > MAX_ROWS
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    with StudyProgress(console, "study t", {k: 10 for k in book.views}) as progress:
        progress.update(book)
    text = out.getvalue()  # not a terminal: rich prints only the frame left on screen
    final = text[text.rindex("trial "):]  # from the table's header on
    rows = _rows(final)
    assert len(rows) == len(book.views) and "not shown" not in final
    first_arch = [r.split("│")[4].strip() for r in rows if "arch0 " in r]
    assert first_arch == ["3K", "6K", "12K", "24K", "48K"]
    assert "segments" in COLUMNS and "N" not in COLUMNS
