"""Remote A2A agents as collaborators: a collaborative agent's `type: a2a` tool entries
join its planner's team under their entry names (planner.py `participants`; a local agent
of the same name wins), and a step naming one is run by calling that tool with the step's task
(its instruction, the larger task, its inputs' outputs) instead of queueing an execution.

The step still has its execution, recorded with its outcome once the remote agent
answered (agent: the entry's name), so the run reads it as any other step's. A crash
during the call leaves no record: the step is sent again when the run resumes."""

from __future__ import annotations

import asyncio
import contextlib

from agentrunner.domain.errors import AgentRunnerError, ConflictError, ExecutionNotFoundError
from agentrunner.domain.execution import Execution, ExecutionError, ExecutionStatus, utcnow
from agentrunner.domain.plan import PlanRun, StepRun
from agentrunner.ports.state import ExecutionStore
from agentrunner.ports.tools import Tool, ToolCatalog, ToolContext
from agentrunner.runtime.plan_steps import step_task
from agentrunner.runtime.registry import AgentRegistry

MAX_ERROR_CHARS = 1000


def remote_collaborator(registry: AgentRegistry, tools: ToolCatalog | None, run: PlanRun, step: StepRun) -> Tool | None:
    """The tool of the run's agent that runs `step`: its `a2a` entry named like the step's
    agent, when no local agent has that name (None otherwise)."""
    if tools is None or step.agent in registry.agents:
        return None
    owner = registry.agents.get(run.agent)
    config = owner.config if owner is not None else None
    if config is None or not any(e.type == "a2a" and e.name == step.agent for e in config.tools):
        return None
    return next((tool for tool in tools.tools_for(run.agent) if tool.definition.name == step.agent), None)


async def remote_step(
    executions: ExecutionStore, tool: Tool, run: PlanRun, owner: Execution, step: StepRun, *, allow: bool
) -> Execution:
    """The step's execution once the remote agent answered (recorded then); the one
    recorded already when the step ran before."""
    assert step.execution_id is not None
    with contextlib.suppress(ExecutionNotFoundError):
        return await executions.get_execution(step.execution_id)
    message = str(step_task(run, step, allow)["prompt"])
    started = utcnow()
    context = ToolContext(
        agent=run.agent,
        execution_id=step.execution_id,
        session_id=None,
        trace_id=run.trace_id,
        tenant=owner.tenant,
        chain_depth=owner.chain_depth,
    )
    output: str | None = None
    error: ExecutionError | None = None
    try:
        async with asyncio.timeout(tool.timeout_seconds):
            output = await tool.call({"message": message}, context)
    except TimeoutError:
        error = ExecutionError(
            code="timed_out", message=f"the remote agent did not answer in {tool.timeout_seconds:g} s"
        )
    except Exception as exc:  # noqa: BLE001 - any failure of the remote agent fails the step, not the pool
        code = exc.code if isinstance(exc, AgentRunnerError) else "remote_agent_failed"
        error = ExecutionError(code=code, message=str(exc)[:MAX_ERROR_CHARS] or type(exc).__name__)
    execution = Execution(
        execution_id=step.execution_id,
        agent=step.agent,
        status=ExecutionStatus.SUCCEEDED if error is None else ExecutionStatus.FAILED,
        input={"prompt": message},
        output=output,
        error=error,
        trace_id=run.trace_id,
        tenant=owner.tenant,
        chain_depth=owner.chain_depth,
        started_at=started,
        finished_at=utcnow(),
    )
    try:
        await executions.create_execution(execution)
    except ConflictError:  # another process of the pool ran it meanwhile: its outcome stands
        return await executions.get_execution(step.execution_id)
    return execution
