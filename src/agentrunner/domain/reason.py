"""Why an agent cannot run, or runs without some of its tools: the whole story, and one
short line for lists (the dashboard's agents page, `agentrunner agents`).

A `Reason` is the whole text (a `str`), so everything that keeps, joins, logs or stores
reasons takes it unchanged; its `short` form rides along for the lists. A plain string
reason (from code that gives no short form) is shortened to its first line.
"""

from __future__ import annotations

# What a list shows of a reason at most: one terminal line beside the agent's name.
SHORT_REASON_CHARS = 80


class Reason(str):
    """A reason's whole text, with `short`: one line of at most SHORT_REASON_CHARS."""

    short: str

    def __new__(cls, detail: str, *, short: str) -> Reason:
        reason = super().__new__(cls, detail)
        reason.short = clipped(short)
        return reason

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuilt, (str(self), self.short))


def _rebuilt(detail: str, short: str) -> Reason:
    return Reason(detail, short=short)


def clipped(text: str) -> str:
    """`text`'s first line, cut to SHORT_REASON_CHARS (an ellipsis says it was cut)."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return line if len(line) <= SHORT_REASON_CHARS else line[: SHORT_REASON_CHARS - 1].rstrip() + "…"


def short_reason(reason: str) -> str:
    """The one-line form of `reason`: its own short form, else its first line clipped."""
    return reason.short if isinstance(reason, Reason) else clipped(reason)
