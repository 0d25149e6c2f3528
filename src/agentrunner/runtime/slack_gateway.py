"""Slack's requests turned into runs and events: slash commands routed to agents,
mentions and direct messages to the default agent, buttons answering clarifications and
the tool calls runs wait on, each request run once however often Slack retries it.

Who runs a Slack request: the agent it is routed to (SLACK_COMMANDS, `/agent NAME text`,
SLACK_DEFAULT_AGENT for mentions and direct messages) is invoked through the orchestrator,
recorded with its outbox event like any invocation. The request is also published as
`slack.command.<command>` / `slack.event.<type>`, its payload shaped as a task (prompt,
source "slack", channel_id, user_id, team_id, response_url/trigger_id or thread_ts), so
agents that subscribe to it run on it too, and are answered in Slack the same way. An agent
both routed to and subscribed runs once: from the event, which is then its run. A routed
run and its event are recorded in one transaction and published together.

Anyone in the workspace can type `/agent NAME`: it runs only the agents Slack may run
(SLACK_ALLOWED_AGENTS; by default the ones routed to Slack: SLACK_COMMANDS' agents,
SLACK_DEFAULT_AGENT and the subscribers of `slack.*` topics), so an agent with powerful
tools is not one slash command away from every workspace member.

Only this gateway marks a run as Slack's: the run's `origin` (where its answer goes: the
response_url or the channel and thread) is recorded by the platform, beside the task, and
carried in the event's `origin` for the runs subscribed to it. The task's own `source`,
`response_url`, `channel_id` or `thread_ts` are information for the agent, never where
anything is posted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agentrunner.domain.errors import AgentNotFoundError, AgentRunnerError, AgentUnavailableError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, utcnow
from agentrunner.domain.slack import SlackMessage, parse_clarify_action_id, slack_origin
from agentrunner.domain.slack_tool_calls import is_tool_call_action, parse_tool_call_action_id
from agentrunner.domain.topics import topic_matches
from agentrunner.logs import get_logger
from agentrunner.ports.cache import Cache
from agentrunner.ports.state import IdempotencyClaim, IdempotencyKeyTakenError, PlanRunStore
from agentrunner.runtime.orchestrator import Orchestrator
from agentrunner.runtime.slack_tool_calls import Click, answer_tool_call_click
from agentrunner.runtime.topics import (
    clarification_answered_topic,
    slack_command_topic,
    slack_event_topic,
    slack_interaction_topic,
)
from agentrunner.tracing import current_trace_id

log = get_logger(__name__)

AGENT_COMMAND = "/agent"
# SLACK_ALLOWED_AGENTS=* : `/agent NAME` runs any agent.
ANY_AGENT = "*"
SOURCE = "slack"
# Message subtypes that are still a person talking; every other subtype (edits, deletions,
# bot messages, joins) is not a request.
_PERSON_SUBTYPES = frozenset({"thread_broadcast", "file_share"})
_MENTION = re.compile(r"<@[A-Z0-9]+(\|[^>]*)?>")
_NOT_A_TOPIC_WORD = re.compile(r"[^A-Za-z0-9_\-:]")


@dataclass(frozen=True, slots=True)
class SlashCommand:
    """A slash command as Slack sent it, and the key that recognises its retries."""

    command: str
    text: str
    user_id: str
    channel_id: str
    team_id: str
    response_url: str
    trigger_id: str
    request_key: str


def topic_word(value: str) -> str:
    """`value` as one word of a topic (characters a topic does not allow become `_`)."""
    return _NOT_A_TOPIC_WORD.sub("_", value) or "_"


class SlackGateway:
    """Turns verified Slack requests into invocations and events (see the module doc)."""

    def __init__(
        self,
        *,
        orchestrator: Orchestrator,
        runs: PlanRunStore,
        cache: Cache,
        routes: Mapping[str, str],
        default_agent: str = "",
        allowed_agents: Collection[str] = (),
        dedup_ttl_seconds: float = 600.0,
    ) -> None:
        self._orchestrator = orchestrator
        self._runs = runs
        self._cache = cache
        self._routes = dict(routes)
        self._default_agent = default_agent
        self._allowed = frozenset(allowed_agents)
        self._ttl = dedup_ttl_seconds

    async def command(self, command: SlashCommand) -> SlackMessage:
        """Run a slash command once and say so (an ephemeral message, what Slack shows at
        once). An unknown command or agent, or no text, is answered with what to do instead.
        Raises `AgentRunnerError` when nothing could be accepted (Slack may retry then).

        Slack's retries of a command are recognised by its signature: for a command routed
        to an agent, as the idempotency key of the run (in the database, with the run: one
        round trip less, and it holds with the cache down); for one only published, in the
        cache (SLACK_DEDUP_TTL_SECONDS)."""
        agent: str | None
        prompt = command.text.strip()
        if command.command == AGENT_COMMAND:
            agent, _, prompt = prompt.partition(" ")
            prompt = prompt.strip()
            if not agent:
                return _ephemeral(f"Usage: `{AGENT_COMMAND} NAME what to do`. Agents: {self._agent_names()}.")
            if not self.may_run(agent):
                # The same answer for an agent that does not exist: no list of hidden agents.
                log.info("slack /agent refused: not an agent Slack may run", agent=agent[:64])
                return _ephemeral(
                    f"`{AGENT_COMMAND} {agent[:64]}` is not allowed here: Slack may run {self._agent_names()} "
                    "(the operator chooses with SLACK_ALLOWED_AGENTS)."
                )
        else:
            agent = self._routes.get(command.command)
        topic = slack_command_topic(topic_word(command.command.lstrip("/")))
        subscribers = self._subscribers(topic)
        if agent is None and not subscribers:
            return _ephemeral(
                f"`{command.command}` is not routed to an agent. {self._routes_help()} "
                f"`{AGENT_COMMAND} NAME what to do` asks any agent."
            )
        if not prompt:
            return _ephemeral(f"Tell the agent what to do: `{command.command} {'NAME ' if agent else ''}what to do`.")
        task: dict[str, Any] = {
            "prompt": prompt,
            "source": SOURCE,
            "command": command.command,
            "channel_id": command.channel_id,
            "user_id": command.user_id,
            "team_id": command.team_id,
            "response_url": command.response_url,
            "trigger_id": command.trigger_id,
        }
        origin = slack_origin(
            response_url=command.response_url,
            channel_id=command.channel_id,
            team_id=command.team_id,
            user_id=command.user_id,
        )
        announced = {**task, "text": command.text, "agent": agent, "origin": origin}
        if agent is not None and agent not in subscribers:
            try:
                await self._run(agent, task, topic, announced, origin, request_key=command.request_key)
            except (AgentNotFoundError, AgentUnavailableError) as exc:
                return _ephemeral(f"{exc.message.split(':')[0]}. {self._routes_help()}")
            except IdempotencyKeyTakenError:
                log.info("slack command seen before, not run again", command=command.command)
                return _ephemeral("Already on it.")
        else:
            seen = f"request:{command.request_key}"
            if not await self._first_time(seen):
                log.info("slack command seen before, not run again", command=command.command)
                return _ephemeral("Already on it.")
            try:
                await self._orchestrator.announce(topic, self._announcement(announced, None))
            except AgentRunnerError:
                await self._forget(seen)
                raise
        who = agent or ", ".join(sorted(subscribers))
        return _ephemeral(f"Working on it: {who} will answer here.")

    async def event(self, envelope: Mapping[str, Any], *, retry_num: str | None = None) -> None:
        """Act once on an Events API callback: an `app_mention` or a direct `message` runs
        the default agent; every person's message is published as `slack.event.<type>`.
        Bot messages, edits and events seen before are ignored."""
        event = envelope.get("event")
        if not isinstance(event, dict):
            return
        kind = str(event.get("type", ""))
        if event.get("bot_id") or (event.get("subtype") and event.get("subtype") not in _PERSON_SUBTYPES):
            log.debug("slack event ignored: a bot's message or an edit", type=kind, subtype=event.get("subtype"))
            return
        event_id = str(envelope.get("event_id") or "")
        if event_id and not await self._first_time(f"event:{event_id}"):
            log.info("slack event seen before, not run again", event_id=event_id, retry_num=retry_num)
            return
        try:
            await self._event(kind, event, envelope)
        except AgentRunnerError:
            if event_id:
                await self._forget(f"event:{event_id}")
            raise

    async def _event(self, kind: str, event: Mapping[str, Any], envelope: Mapping[str, Any]) -> None:
        text = str(event.get("text") or "")
        task: dict[str, Any] = {
            "prompt": _MENTION.sub("", text).strip(),
            "source": SOURCE,
            "event_type": kind,
            "event_id": envelope.get("event_id"),
            "channel_id": event.get("channel"),
            "user_id": event.get("user"),
            "team_id": envelope.get("team_id") or event.get("team"),
            "thread_ts": event.get("thread_ts") or event.get("ts"),
        }
        topic = slack_event_topic(topic_word(kind))
        direct = kind == "app_mention" or (kind == "message" and event.get("channel_type") == "im")
        agent = self._default_agent if direct else None
        if direct and not agent:
            log.warning("a Slack mention has no agent to answer it: set SLACK_DEFAULT_AGENT", type=kind)
        origin = slack_origin(
            channel_id=task["channel_id"], thread_ts=task["thread_ts"], team_id=task["team_id"], user_id=task["user_id"]
        )
        announced = {**task, "text": text, "agent": agent, "origin": origin}
        if agent and task["prompt"] and agent not in self._subscribers(topic):
            try:
                await self._run(agent, task, topic, announced, origin)
                return
            except (AgentNotFoundError, AgentUnavailableError) as exc:
                log.error("SLACK_DEFAULT_AGENT cannot run", agent=agent, error=exc.message)
        await self._orchestrator.announce(topic, self._announcement(announced, None))

    async def interaction(self, payload: Mapping[str, Any], *, request_key: str) -> None:
        """Act once on an interaction: a clarification button publishes
        `clarification.answered.<run_id>`; a tool call button answers its execution
        (runtime/slack_tool_calls.py); other buttons publish `slack.interaction.<action_id>`,
        other interactions `slack.interaction.<type>`."""
        if not await self._first_time(f"request:{request_key}"):
            log.info("slack interaction seen before, not run again")
            return
        try:
            await self._interaction(payload)
        except AgentRunnerError:
            await self._forget(f"request:{request_key}")
            raise

    async def _interaction(self, payload: Mapping[str, Any]) -> None:
        user: Mapping[str, Any] = payload.get("user") or {}
        origin = {
            "source": SOURCE,
            "user_id": user.get("id"),
            "team_id": (payload.get("team") or {}).get("id"),
            "channel_id": (payload.get("channel") or {}).get("id"),
            "response_url": payload.get("response_url"),
            "trigger_id": payload.get("trigger_id"),
            "message_ts": (payload.get("container") or {}).get("message_ts"),
        }
        # Where a run subscribed to the interaction's event answers (the platform's mark).
        answer_to = slack_origin(
            response_url=origin["response_url"],
            channel_id=origin["channel_id"],
            team_id=origin["team_id"],
            user_id=origin["user_id"],
        )
        kind = str(payload.get("type", ""))
        if kind != "block_actions":
            await self._orchestrator.announce(
                slack_interaction_topic(topic_word(kind)), {**origin, "type": kind, "origin": answer_to}
            )
            return
        for action in payload.get("actions") or []:
            action_id = str(action.get("action_id", ""))
            value = action.get("value") or (action.get("selected_option") or {}).get("value")
            if is_tool_call_action(action_id):
                tool_call = parse_tool_call_action_id(action_id)
                if tool_call is None:
                    log.warning("a malformed tool call button: ignored", action_id=action_id[:80])
                    continue
                click = Click(
                    team_id=str(origin["team_id"] or ""),
                    user_id=str(origin["user_id"] or ""),
                    response_url=str(origin["response_url"] or ""),
                )
                await answer_tool_call_click(self._orchestrator, self._runs, tool_call, click)
                continue
            clarification = parse_clarify_action_id(action_id)
            if clarification is not None:
                run_id, clarification_id = clarification
                # The first click answers; a second (another button, another person) is too late.
                if not await self._first_time(f"answer:{run_id}:{clarification_id}"):
                    log.info(
                        "clarification already answered from slack", run_id=run_id, clarification_id=clarification_id
                    )
                    continue
                answer = {"run_id": run_id, "clarification_id": clarification_id, "answer": value}
                # `origin` (an addition to the contract's fields) lets the slack role mark the
                # question answered in Slack.
                message: Mapping[str, Any] = payload.get("message") or {}
                origin_of_click = {**origin, "question": _question_text(message)}
                await self._orchestrator.announce(
                    clarification_answered_topic(topic_word(run_id)),
                    {**answer, "answered_by": user.get("id"), "origin": origin_of_click},
                )
                log.info("clarification answered from slack", run_id=run_id, clarification_id=clarification_id)
                continue
            await self._orchestrator.announce(
                slack_interaction_topic(topic_word(action_id)),
                {
                    **origin,
                    "action_id": action_id,
                    "block_id": action.get("block_id"),
                    "value": value,
                    "origin": answer_to,
                },
            )

    async def _run(
        self,
        agent: str,
        task: dict[str, Any],
        topic: str,
        announced: dict[str, Any],
        origin: dict[str, Any],
        *,
        request_key: str = "",
    ) -> None:
        """Invoke `agent` on `task`; the request's event on `topic` is recorded in the same
        transaction and published with the invocation (one write, no second round trip on
        Slack's clock, and never one without the other). With `request_key`, a request run
        before raises `IdempotencyKeyTakenError` and runs nothing."""

        def announcement(execution: Execution) -> list[Event]:
            return [self._orchestrator.event(topic, self._announcement(announced, execution.execution_id))]

        claim = None
        if request_key:
            key = hashlib.sha256(b"slack-request:" + request_key.encode()).hexdigest()
            claim = IdempotencyClaim(key=key, fingerprint=key, expired_before=utcnow() - timedelta(seconds=self._ttl))
        await self._orchestrator.invoke(agent, task, wait=0, origin=origin, with_events=announcement, idempotency=claim)

    @staticmethod
    def _announcement(announced: dict[str, Any], execution_id: str | None) -> dict[str, Any]:
        """The payload of a request's event: the task, the run it started (if any), the trace."""
        return {**announced, "execution_id": execution_id, "trace_id": current_trace_id()}

    def unknown_routes(self) -> dict[str, str]:
        """Routed commands whose agent is not registered (to warn about at start)."""
        return {
            command: agent for command, agent in self._routes.items() if agent not in self._orchestrator.registry.agents
        }

    def _subscribers(self, topic: str) -> set[str]:
        """Agents that run (available or degraded) whose event_subscriptions match `topic`."""
        return {
            agent.name
            for agent in self._orchestrator.registry.agents.values()
            if agent.config is not None
            and agent.status.runs
            and any(topic_matches(pattern, topic) for pattern in agent.config.event_subscriptions)
        }

    def may_run(self, agent: str) -> bool:
        """Whether `/agent NAME` may run `agent`: one of SLACK_ALLOWED_AGENTS (`*`: any), or
        with none named, one routed to Slack (a command's agent, the default agent, or a
        subscriber of a `slack.*` topic)."""
        if self._allowed:
            return ANY_AGENT in self._allowed or agent in self._allowed
        if agent in self._routes.values() or agent == self._default_agent:
            return True
        registered = self._orchestrator.registry.agents.get(agent)
        return (
            registered is not None
            and registered.config is not None
            and any(pattern.split(".", 1)[0] == SOURCE for pattern in registered.config.event_subscriptions)
        )

    def _agent_names(self) -> str:
        names = [
            name
            for name, agent in self._orchestrator.registry.agents.items()
            if agent.status.runs and self.may_run(name)
        ]
        return ", ".join(names) or "none available"

    def _routes_help(self) -> str:
        if not self._routes:
            return "No commands are routed (SLACK_COMMANDS is empty)."
        return "Routed: " + ", ".join(f"`{command}` → {agent}" for command, agent in sorted(self._routes.items())) + "."

    async def _first_time(self, key: str) -> bool:
        """True the first time `key` is seen within the TTL. With the cache down, True:
        running a retry twice beats dropping a request."""
        try:
            return await self._cache.add(f"slack:seen:{key}", b"1", self._ttl)
        except AgentRunnerError as exc:
            log.warning("slack de-duplication skipped: the cache is down", error=exc.message)
            return True

    async def _forget(self, key: str) -> None:
        """Let Slack's retry of a request that failed run."""
        try:
            await self._cache.delete(f"slack:seen:{key}")
        except AgentRunnerError as exc:
            log.warning("slack request failed and stays marked seen: the cache is down", error=exc.message)


def _question_text(message: Mapping[str, Any]) -> str:
    """The question of a clarification message (its first section), else its text."""
    for block in message.get("blocks") or []:
        if isinstance(block, dict) and block.get("type") == "section":
            return str((block.get("text") or {}).get("text") or "")
    return str(message.get("text") or "")


def _ephemeral(text: str) -> SlackMessage:
    return SlackMessage(text=text, ephemeral=True)
