"""A tool call that waits for a human, as Slack shows it: the message with the call and its
buttons (approve / deny a gated call; it happened / run it again / fail for a call a crash
cut short), what a button's action_id says, and the message once answered.

A button names the execution and the one pause it was posted for (`pause_token`: the
call's step, id and when it was asked), so a click on an old message never answers a
later question of the same execution. Everything shown comes from the model (the tool's
arguments): it is escaped for mrkdwn (no link, no mention, no end of the code block) and
cut to a bounded size; the whole call stays in `GET /executions/{id}`.

"It happened" from Slack has no result to type: the model reads `SLACK_HAPPENED_RESULT`,
which says so, never a made-up result (a result is given with POST /executions/{id}/tool-outcome).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from agentrunner.domain.slack import MESSAGE_CHARS, SlackMessage
from agentrunner.domain.tool_gates import DECISIONS, Decision, PauseReason, PendingToolCall

TOOL_CALL_ACTION_PREFIX = "toolcall:"
# The arguments as shown, escaped: the rest of the section (heading, hint) fits beside them
# within a section's 3,000 characters.
ARGUMENTS_CHARS = 2000
# Slack caps an action_id at 255 characters; ours are far shorter, anything longer is forged.
MAX_ACTION_ID_CHARS = 255
SLACK_HAPPENED_RESULT = (
    "A human confirmed in Slack that this call happened; its result was not given "
    "(nothing is known of what it returned)."
)
_TOKEN_CHARS = 16
_ACTION_ID = re.compile(
    rf"{TOOL_CALL_ACTION_PREFIX}(?P<decision>[a-z]{{1,16}}):(?P<execution>[A-Za-z0-9_-]{{1,64}}):"
    rf"(?P<token>[0-9a-f]{{{_TOKEN_CHARS}}})"
)
_DECISION_WORDS = frozenset(decision.value for decision in Decision)
_SLACK_USER = re.compile(r"[UW][A-Z0-9]{1,20}")
# Button label and style of each answer, in the order shown.
_BUTTONS: dict[Decision, tuple[str, str | None]] = {
    Decision.APPROVE: ("Approve", "primary"),
    Decision.DENY: ("Deny", "danger"),
    Decision.HAPPENED: ("It happened", "primary"),
    Decision.AGAIN: ("Run it again", None),
    Decision.FAIL: ("Fail", "danger"),
}
_ANSWERED: dict[Decision, str] = {
    Decision.APPROVE: ":white_check_mark: Approved",
    Decision.DENY: ":no_entry_sign: Denied",
    Decision.HAPPENED: ":white_check_mark: Marked as happened",
    Decision.AGAIN: ":repeat: Run again",
    Decision.FAIL: ":x: Failed",
}


@dataclass(frozen=True, slots=True)
class ToolCallAction:
    """What a tool call button asks: `decision` for the pause `token` of `execution_id`."""

    decision: Decision
    execution_id: str
    token: str


def pause_token(pending: PendingToolCall) -> str:
    """A short digest naming one pause: the same for every redelivery of its event, another
    for the next question of the execution (another step, or the same asked again)."""
    named = (
        f"{pending.reason.value}|{pending.generation}|{pending.seq}|{pending.call_id}|{pending.asked_at.isoformat()}"
    )
    return hashlib.sha256(named.encode()).hexdigest()[:_TOKEN_CHARS]


def tool_call_action_id(decision: Decision, execution_id: str, token: str) -> str:
    """The action_id of the button that answers `decision` to pause `token` of `execution_id`."""
    return f"{TOOL_CALL_ACTION_PREFIX}{decision.value}:{execution_id}:{token}"


def is_tool_call_action(action_id: str) -> bool:
    """Whether `action_id` claims to be a tool call button (well formed or not)."""
    return action_id.startswith(TOOL_CALL_ACTION_PREFIX)


def parse_tool_call_action_id(action_id: str) -> ToolCallAction | None:
    """The action of a well-formed tool call button's action_id, else None (too long, an
    unknown decision, an id of characters no execution id has)."""
    if len(action_id) > MAX_ACTION_ID_CHARS:
        return None
    match = _ACTION_ID.fullmatch(action_id)
    if match is None or match["decision"] not in _DECISION_WORDS:
        return None
    return ToolCallAction(Decision(match["decision"]), match["execution"], match["token"])


def escape_mrkdwn(text: str) -> str:
    """`text` shown as is in mrkdwn: `&`, `<`, `>` escaped (no link, no `<!channel>`, no
    `<@U…>`), `@` and backticks followed by a zero-width space (no bare `@here`, no end of a
    code block)."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("@", "@\u200b")
        .replace("`", "`\u200b")
    )


def escaped_within(text: str, limit: int) -> tuple[str, bool]:
    """`text` escaped and cut so the escaped form holds at most `limit` characters (never in
    the middle of an escape), and whether it was cut."""
    shown: list[str] = []
    size = 0
    for index, char in enumerate(text):
        piece = escape_mrkdwn(char)
        if size + len(piece) > limit:
            return "".join(shown), index < len(text)
        shown.append(piece)
        size += len(piece)
    return "".join(shown), False


def tool_call_message(*, agent: str, execution_id: str, pending: PendingToolCall) -> SlackMessage:
    """The call `pending` of `execution_id` with one button per answer its reason takes."""
    tool = escape_mrkdwn(pending.tool[:200])
    who = escape_mrkdwn(agent[:200])
    if pending.reason is PauseReason.APPROVAL:
        heading = f":raised_hand: *{who}* asks to run `{tool}`: approve it?"
        hint = f"_Or POST /executions/{execution_id}/approve or /deny, or the dashboard._"
    else:
        heading = (
            f":warning: *{who}* was running `{tool}` when its run stopped, and it is not safe to repeat: did it happen?"
        )
        hint = (
            f"_It happened: the model is told so, with no result; to give one, POST "
            f"/executions/{execution_id}/tool-outcome._"
        )
    arguments = json.dumps(pending.arguments, ensure_ascii=False, indent=1, default=str)
    shown, cut = escaped_within(arguments, ARGUMENTS_CHARS)
    if cut:
        shown += f"\n… (cut: the whole call is in GET /executions/{execution_id})"
    text = f"{heading}\n```{shown}```\n{hint}"
    token = pause_token(pending)
    decisions = [decision for decision in _BUTTONS if decision in DECISIONS[pending.reason]]
    buttons = [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": _BUTTONS[decision][0]},
            "value": decision.value,
            "action_id": tool_call_action_id(decision, execution_id, token),
            **({"style": style} if (style := _BUTTONS[decision][1]) else {}),
        }
        for decision in decisions
    ]
    return SlackMessage(
        text=f"{who} waits for a human before calling {tool}"[:MESSAGE_CHARS],
        blocks=[
            {"type": "section", "text": {"type": "mrkdwn", "text": text[:MESSAGE_CHARS]}},
            {"type": "actions", "block_id": f"toolcall-{token}", "elements": buttons},
        ],
    )


def tool_answered_message(*, tool: str, decision: Decision, answered_by: str) -> SlackMessage:
    """What a tool call's message becomes once answered from it: who said what, without
    buttons (so nobody clicks again)."""
    who = f"<@{answered_by}>" if _SLACK_USER.fullmatch(answered_by) else "someone"
    text = f"{_ANSWERED[decision]} by {who}: `{escape_mrkdwn(tool[:200])}`"
    return SlackMessage(text=text[:MESSAGE_CHARS], replace_original=True)
