"""What agentrunner says to Slack, in Slack's terms but free of any SDK: messages, the
button of a clarification, and how long text is cut to fit Slack's limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Slack truncates a message's `text` past 40,000 characters and renders a section block's
# text up to 3,000; messages are cut well below both, at line breaks where possible.
MESSAGE_CHARS = 3000
# A response_url takes at most 5 messages (within 30 minutes of the command).
RESPONSE_URL_MESSAGES = 5
# chat.postMessage has no such cap; a reply is still kept to a readable number of messages.
THREAD_MESSAGES = 10

CLARIFY_ACTION_PREFIX = "clarify:"
# Where a Slack request came from (Execution.origin["kind"]); only the Slack gateway sets it.
SLACK_ORIGIN_KIND = "slack"
ORIGIN_FIELDS = ("response_url", "channel_id", "thread_ts", "team_id", "user_id")


def slack_origin(**fields: Any) -> dict[str, Any]:
    """The origin the Slack gateway records on the runs of a verified Slack request."""
    return {"kind": SLACK_ORIGIN_KIND, **{name: str(fields[name]) for name in ORIGIN_FIELDS if fields.get(name)}}


def origin_of_event(topic: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The Slack origin an event's run answers to: only on the gateway's own `slack.` topics
    (reserved: no caller or tool publishes them), never from any other event's payload."""
    origin = payload.get("origin")
    if topic.startswith("slack.") and isinstance(origin, dict) and origin.get("kind") == SLACK_ORIGIN_KIND:
        return origin
    return None


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """One message: its text (always set, the fallback of notifications), optional Block Kit
    blocks, whether only the user who asked sees it, and whether it replaces the message
    whose button was clicked (those two through a response_url only)."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    ephemeral: bool = False
    replace_original: bool = False


def split_text(text: str, limit: int = MESSAGE_CHARS) -> list[str]:
    """Cut `text` into pieces of at most `limit` characters that joined give `text` back,
    cutting after a line break (else after a space) in the second half of a piece when
    there is one. Empty text is one empty piece."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n") + 1
        if cut <= limit // 2:
            cut = window.rfind(" ") + 1
        if cut <= limit // 2:
            cut = limit
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    return pieces


def reply_messages(text: str, *, max_messages: int, note: str, limit: int = MESSAGE_CHARS) -> list[SlackMessage]:
    """`text` as at most `max_messages` messages; when it does not fit, the last message
    ends with `note` (where to read the rest) instead of the text that did not fit."""
    pieces = split_text(text, limit)
    if len(pieces) > max_messages:
        kept = pieces[:max_messages]
        ending = f"\n… {note}"
        last = kept[-1]
        kept[-1] = last[: max(0, limit - len(ending))] + ending
        pieces = kept
    return [SlackMessage(text=piece) for piece in pieces]


def clarify_action_id(run_id: str, clarification_id: str) -> str:
    """The action_id of a button that answers clarification `clarification_id` of `run_id`."""
    return f"{CLARIFY_ACTION_PREFIX}{run_id}:{clarification_id}"


def parse_clarify_action_id(action_id: str) -> tuple[str, str] | None:
    """(run_id, clarification_id) of a clarification button's action_id, else None."""
    if not action_id.startswith(CLARIFY_ACTION_PREFIX):
        return None
    run_id, sep, clarification_id = action_id[len(CLARIFY_ACTION_PREFIX) :].partition(":")
    if not (run_id and sep and clarification_id):
        return None
    return run_id, clarification_id


def clarification_message(
    *, run_id: str, clarification_id: str, question: str, kind: str, options: list[str], default: str | None
) -> SlackMessage:
    """A clarification question with one button per answer: the options of a `choice`,
    yes/no for a `confirm`; a `text` question gets the default as its only button (other
    answers go through the API or the web UI)."""
    action_id = clarify_action_id(run_id, clarification_id)
    answers: list[str]
    if kind == "confirm":
        answers = ["yes", "no"]
    elif kind == "choice":
        answers = list(options)
    else:
        answers = [default] if default else []
    hint = ""
    if kind == "text":
        hint = f"\n_Answer with POST /plan-runs/{run_id}/clarifications/{clarification_id} or in the web UI._"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f":question: {question}{hint}"[:MESSAGE_CHARS]}}
    ]
    # Slack wants action_ids unique within a block: one block per button keeps every
    # button's action_id exactly `clarify:<run_id>:<clarification_id>`.
    blocks.extend(
        {
            "type": "actions",
            "block_id": f"clarify-{index}-{clarification_id}"[:255],
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": answer[:75] or "(empty)"},
                    "value": answer[:2000],
                    "action_id": action_id[:255],
                    **({"style": "primary"} if answer == default else {}),
                }
            ],
        }
        for index, answer in enumerate(answers[:25])
    )
    return SlackMessage(text=question, blocks=blocks)


def answered_message(question: str, answer: str, answered_by: str) -> SlackMessage:
    """What a clarification's message becomes once answered: the question and who said
    what, without buttons (so nobody clicks again)."""
    text = f":white_check_mark: {question}\n<@{answered_by}> answered *{answer}*"
    return SlackMessage(text=text[:MESSAGE_CHARS], replace_original=True)
