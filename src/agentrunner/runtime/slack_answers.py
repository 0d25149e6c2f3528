"""Answers back to Slack: when an execution that came from Slack ends, its output (or what
went wrong) goes to the command's response_url, or to the event's thread with
chat.postMessage; a collaborative run's question from Slack is posted with buttons, and
so is the tool call an execution from Slack waits on (`execution.waiting.<agent>`: approve
or deny, or it happened / run it again / fail), replaced once answered from Slack.

Where an answer goes is the execution's `origin`, recorded by the Slack gateway only: a
task_data carrying `source`, `response_url`, `channel_id` or `thread_ts` posts nothing.

Delivery is at least once: a reply that still fails after the adapter's retries raises,
so the bus delivers the event again (and, after its last attempt, keeps it as a dead
letter to replay). Each message of a reply is remembered once sent, so a redelivery posts
only what had not gone yet.
"""

from __future__ import annotations

from typing import Any

from agentrunner.domain.errors import AgentRunnerError, ExecutionNotFoundError, PlanRunNotFoundError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.slack import (
    RESPONSE_URL_MESSAGES,
    THREAD_MESSAGES,
    SlackMessage,
    answered_message,
    clarification_message,
    reply_messages,
)
from agentrunner.domain.slack_tool_calls import pause_token, tool_answered_message, tool_call_message
from agentrunner.domain.tool_gates import Decision
from agentrunner.logs import get_logger
from agentrunner.ports.bus import EventBus, Subscription
from agentrunner.ports.cache import Cache
from agentrunner.ports.slack import SlackReplies
from agentrunner.ports.state import ExecutionStore, PlanRunStore
from agentrunner.runtime.slack_tool_calls import slack_origin_for
from agentrunner.runtime.topics import (
    CLARIFICATION_ANSWERED_PATTERN,
    CLARIFICATION_REQUESTED_PATTERN,
    FINISHED_PATTERN,
    SLACK_ANSWERS_QUEUE,
    SLACK_CLARIFICATIONS_QUEUE,
    SLACK_TOOL_CALLS_QUEUE,
    TOOL_ANSWERED_PATTERN,
    WAITING_PATTERN,
    is_clarification_answer,
    is_tool_answered_topic,
)

log = get_logger(__name__)

SOURCE = "slack"


class SlackAnswers:
    """Consumes `execution.finished.#`, `clarification.requested.#` and
    `execution.waiting.#` and answers in Slack for those that came from it (the origin the
    Slack gateway recorded on the execution, or on the plan run)."""

    def __init__(
        self,
        *,
        bus: EventBus,
        executions: ExecutionStore,
        runs: PlanRunStore,
        cache: Cache,
        replies: SlackReplies,
        sent_ttl_seconds: float = 24 * 3600.0,
        prefetch: int = 10,
    ) -> None:
        self._bus = bus
        self._executions = executions
        self._runs = runs
        self._cache = cache
        self._replies = replies
        self._ttl = sent_ttl_seconds
        self._prefetch = prefetch
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        """Start consuming (the queues are shared by every slack role replica)."""
        self._subscriptions = [
            await self._bus.subscribe(
                SLACK_ANSWERS_QUEUE, [FINISHED_PATTERN], self._on_finished, prefetch=self._prefetch
            ),
            await self._bus.subscribe(
                SLACK_CLARIFICATIONS_QUEUE,
                [CLARIFICATION_REQUESTED_PATTERN, CLARIFICATION_ANSWERED_PATTERN],
                self._on_clarification,
                prefetch=self._prefetch,
            ),
            await self._bus.subscribe(
                SLACK_TOOL_CALLS_QUEUE,
                [WAITING_PATTERN, TOOL_ANSWERED_PATTERN],
                self._on_tool_call,
                prefetch=self._prefetch,
            ),
        ]

    async def stop(self) -> None:
        """Stop consuming; replies being sent get the bus's grace to finish."""
        for subscription in self._subscriptions:
            await subscription.cancel()
        self._subscriptions = []

    async def _on_finished(self, event: Event) -> None:
        carried = event.payload.get("execution")
        if isinstance(carried, dict) and not isinstance(carried.get("origin"), dict):
            return  # most executions: no origin, read no further
        # The event only says "look": whether to answer, where and what are read from the
        # execution as stored (its origin set by the Slack gateway), so neither a forged
        # `execution.finished` nor a task_data that looks like a Slack request makes the bot post.
        execution_id = carried.get("execution_id") if isinstance(carried, dict) else event.payload.get("execution_id")
        try:
            execution = await self._executions.get_execution(str(execution_id))
        except ExecutionNotFoundError:
            log.warning("finished event for an unknown execution ignored", execution_id=str(execution_id)[:64])
            return
        origin = execution.slack_origin
        if origin is None or not execution.status.is_terminal:
            return
        await self._send(f"reply:{execution.execution_id}", origin, answer_text(execution))
        log.info("slack answer sent", execution_id=execution.execution_id, agent=execution.agent)

    async def _on_clarification(self, event: Event) -> None:
        payload = event.payload
        # The question and the Slack origin are the stored run's, never the payload's.
        run_id, clarification_id = str(payload.get("run_id")), str(payload.get("clarification_id"))
        try:
            run = await self._runs.get_plan_run(run_id)
        except PlanRunNotFoundError:
            log.warning("clarification event for an unknown plan run ignored", run_id=run_id[:64])
            return
        asked = next((c for c in run.clarifications if c.id == clarification_id), None)
        if asked is None or not isinstance(run.origin, dict) or run.origin.get("source") != SOURCE:
            return
        if is_clarification_answer(event.topic):
            origin = payload.get("origin")
            if isinstance(origin, dict):
                await self._mark_answered(payload, origin)
            return
        message = clarification_message(
            run_id=run.id,
            clarification_id=asked.id,
            question=asked.question,
            kind=asked.kind.value,
            options=list(asked.options),
            default=asked.default,
        )
        await self._deliver(f"clarify:{run.id}:{asked.id}:0", run.origin, message)
        log.info("slack clarification asked", run_id=run.id, clarification_id=asked.id)

    async def _on_tool_call(self, event: Event) -> None:
        payload = event.payload
        if is_tool_answered_topic(event.topic):
            await self._mark_tool_call_answered(payload)
            return
        if payload.get("from_slack") is False:
            return  # most executions: not from Slack, read no further
        # As for an answer: the call, the buttons and where they go are the stored execution's.
        execution_id = str(payload.get("execution_id"))
        try:
            execution = await self._executions.get_execution(execution_id)
        except ExecutionNotFoundError:
            log.warning("waiting event for an unknown execution ignored", execution_id=execution_id[:64])
            return
        origin, pending = await slack_origin_for(execution, self._runs), execution.pending_tool_call
        if origin is None or execution.status is not ExecutionStatus.WAITING_APPROVAL or pending is None:
            return  # not from Slack, or answered (or cancelled) before this event came
        message = tool_call_message(agent=execution.agent, execution_id=execution.execution_id, pending=pending)
        await self._deliver(f"toolcall:{execution.execution_id}:{pause_token(pending)}", origin, message)
        log.info(
            "slack tool call question asked",
            execution_id=execution.execution_id,
            reason=pending.reason.value,
            tool=pending.tool,
        )

    async def _mark_tool_call_answered(self, payload: dict[str, Any]) -> None:
        """Replace the clicked tool call message's buttons with who answered what (the
        event comes only from the Slack gateway, with the click's response_url)."""
        origin = payload.get("origin")
        response_url = origin.get("response_url") if isinstance(origin, dict) else None
        try:
            decision = Decision(str(payload.get("decision")))
        except ValueError:
            return
        if not isinstance(response_url, str) or not response_url:
            return
        message = tool_answered_message(
            tool=str(payload.get("tool")), decision=decision, answered_by=str(payload.get("answered_by"))
        )
        key = f"toolcall-answered:{payload.get('execution_id')}:{payload.get('token')}"
        await self._deliver(key, {"response_url": response_url}, message)

    async def _mark_answered(self, payload: dict[str, Any], origin: dict[str, Any]) -> None:
        """Replace the clicked question's buttons with who answered what (through the
        click's response_url; an answer from elsewhere has none and changes nothing)."""
        if not origin.get("response_url"):
            return
        message = answered_message(
            str(origin.get("question") or "").removeprefix(":question: ").split("\n_Answer with")[0],
            str(payload.get("answer")),
            str(payload.get("answered_by")),
        )
        key = f"answered:{payload.get('run_id')}:{payload.get('clarification_id')}"
        await self._deliver(key, {"response_url": origin["response_url"]}, message)

    async def _send(self, key: str, origin: dict[str, Any], text: str) -> None:
        """`text` to where `origin` came from, cut to Slack's limits, each piece once."""
        by_url = bool(origin.get("response_url"))
        messages = reply_messages(
            text,
            max_messages=RESPONSE_URL_MESSAGES if by_url else THREAD_MESSAGES,
            note=f"the whole answer is in execution {key.split(':', 1)[1]} (GET /executions/{{id}})",
        )
        for index, message in enumerate(messages):
            await self._deliver(f"{key}:{index}", origin, message)

    async def _deliver(self, key: str, origin: dict[str, Any], message: SlackMessage) -> None:
        if await self._sent(key):
            return
        response_url = origin.get("response_url")
        channel = origin.get("channel_id")
        if isinstance(response_url, str) and response_url:
            await self._replies.respond(response_url, message)
        elif isinstance(channel, str) and channel:
            thread = origin.get("thread_ts")
            await self._replies.post(channel, message, thread_ts=thread if isinstance(thread, str) else None)
        else:
            log.warning("a Slack reply has nowhere to go: no response_url or channel_id in its origin", key=key)
            return
        try:
            await self._cache.set(f"slack:sent:{key}", b"1", self._ttl)
        except AgentRunnerError as exc:
            log.warning("slack reply sent but not remembered: a redelivery would send it again", error=exc.message)

    async def _sent(self, key: str) -> bool:
        try:
            return await self._cache.get(f"slack:sent:{key}") is not None
        except AgentRunnerError as exc:
            log.warning("slack reply de-duplication skipped: the cache is down", error=exc.message)
            return False


def answer_text(execution: Execution) -> str:
    """What Slack shows when `execution` ends: its output, or a clear error."""
    if execution.status is ExecutionStatus.SUCCEEDED:
        return execution.output or f"({execution.agent} finished with no answer)"
    reason = execution.error.message if execution.error else "no reason recorded"
    return (
        f":warning: {execution.agent} could not answer ({execution.status.value}): {reason}\n"
        f"(execution {execution.execution_id}, trace {execution.trace_id})"
    )
