"""How an event becomes an execution, and how an execution's output goes on to the agents
subscribed to it: the one place both pools (autonomous and continuous in `worker.py`,
collaborative in `collaboration.py`) and the end of a plan run (`plan_runs.py`) take it from.

A chain is agents' outputs feeding the agents that subscribe to them
(`agent.output.<agent>`). Each link carries its depth (`CHAIN_DEPTH_HEADER`) and the tenant
whose request started it (`TENANT_HEADER`). The execution an event starts records both, and
its output event goes on from the recorded depth: so a step that a collaborative run starts
through `invoke.<agent>` (an event that carries no depth) continues the run's chain instead
of starting one afresh, and a loop through a collaborative agent still ends at the limit.
Each pool once built these records itself, and the copies drifted (the collaborative one
lost the tenant, the webhook URL and the depth); hence one builder.
"""

from __future__ import annotations

import hashlib

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import ConflictError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution
from agentrunner.domain.slack import origin_of_event
from agentrunner.logs import get_logger
from agentrunner.ports.state import ExecutionStore
from agentrunner.runtime.registry import AgentRegistry
from agentrunner.runtime.topics import CHAIN_DEPTH_HEADER, TENANT_HEADER, output_topic

log = get_logger(__name__)


def execution_id_for(agent: str, event: Event) -> str:
    """The execution an event starts for `agent`: the same on every redelivery."""
    return hashlib.sha256(f"{agent}\0{event.event_id}".encode()).hexdigest()[:32]


def chain_depth(event: Event) -> int:
    """How many agent outputs led to `event` (0 when it carries no depth, or nonsense: a
    negative or unreadable header never buys a chain more links)."""
    try:
        return max(0, int(event.headers.get(CHAIN_DEPTH_HEADER, "0")))
    except ValueError:
        return 0


def chain_tenant(event: Event) -> str | None:
    """The tenant whose request led to `event`, or None for the platform's own."""
    return event.headers.get(TENANT_HEADER) or None


def execution_for_event(
    agent: str, event: Event, config: AgentConfig | None, agent_version: int | None = None
) -> Execution:
    """The execution `event` starts for `agent` (queued, not yet stored): its id derives from
    the event, and it keeps the event's tenant and chain depth and the agent's own
    `webhook_url` (`config`: the agent's configuration, when the registry has one)."""
    session = event.payload.get("session_id")
    return Execution(
        execution_id=execution_id_for(agent, event),
        agent=agent,
        input=event.payload,
        session_id=session if isinstance(session, str) else None,
        trace_id=event.trace_id,
        webhook_url=config.webhook_url if config is not None else None,
        tenant=chain_tenant(event),
        origin=origin_of_event(event.topic, event.payload),
        chain_depth=chain_depth(event),
        agent_version=agent_version,
    )


async def record_execution_for_event(
    store: ExecutionStore, agent: str, event: Event, config: AgentConfig | None, agent_version: int | None = None
) -> str:
    """The id of the execution `event` starts for `agent`, recorded on its first delivery
    (a redelivery finds it: its stored status decides what happens). Raises what the store
    raises, but never `ConflictError`."""
    execution = execution_for_event(agent, event, config, agent_version)
    try:
        await store.create_execution(execution)
    except ConflictError:
        return execution.execution_id
    log.info("execution started by event", execution_id=execution.execution_id, agent=agent, topic=event.topic)
    return execution.execution_id


async def start_for_event(
    store: ExecutionStore, registry: AgentRegistry, agent: str, event: Event, *, max_depth: int
) -> str | None:
    """The id of the execution a subscribed `event` starts for `agent` (recorded on first
    delivery, see `record_execution_for_event`), or None when its chain is deeper than
    `max_depth`: then nothing runs (logged), which is how a loop of agents ends."""
    depth = chain_depth(event)
    if depth > max_depth:
        log.warning("chain too deep, event not run", agent=agent, topic=event.topic, depth=depth)
        return None
    registered = registry.agents.get(agent)
    config = registered.config if registered else None
    return await record_execution_for_event(store, agent, event, config, registry.version_of(agent))


def output_event(execution: Execution) -> Event:
    """`agent.output.<agent>` for a succeeded execution: the next link of its chain, one
    deeper than the execution's recorded depth, for the tenant the execution counts for.
    An answer that followed an `output_schema` rides as `output_json` too (parsed)."""
    payload = {
        "agent": execution.agent,
        "execution_id": execution.execution_id,
        "output": execution.output,
        "session_id": execution.session_id,
    }
    if execution.output_json is not None:  # structured output: the next agent gets it parsed too
        payload["output_json"] = execution.output_json
    return Event(
        topic=output_topic(execution.agent),
        payload=payload,
        trace_id=execution.trace_id,
        headers={CHAIN_DEPTH_HEADER: str(execution.chain_depth + 1)}
        | ({TENANT_HEADER: execution.tenant} if execution.tenant else {}),
    )
