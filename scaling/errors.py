"""One exception type for bad user input.

The CLI turns a `UserInputError` into a one-paragraph message and exit code 2 with no
traceback; every library layer raises it (never a bare ValueError) when the fault is in what
the user gave, so the message can name the field and the fix.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user: the message names the field and how to fix it."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}. Fix: {fix}")

    def __reduce__(self):  # keep the three parts when pickled (Ray ships errors between processes)
        return (type(self), (self.field, self.problem, self.fix))
