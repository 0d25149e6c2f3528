"""Answers given in Slack to the tool call an execution waits on: a click on a button of the
message the slack role posted (domain/slack_tool_calls.py) answers the execution through
the path `POST /executions/{id}/approve`, `/deny` and `/tool-outcome` take
(runtime/tool_answers.py): one conditional save, so of two clicks (two people, a double
click) the first answers and the second changes nothing, and an approved call runs once.

Only from the workspace the run came from, for the run the button was posted for: the
execution must be one the Slack gateway started (its recorded origin, in the tenant Slack's
runs are recorded under) or a step of a collaborative run the gateway started
(`slack_origin_for`), the click's team must be the origin's, and the button's pause must
be the one the execution still waits on. Anything else (a forged action_id naming
another tenant's execution, a click from another workspace, an old message) is logged and
changes nothing; the clicker is told nothing more than Slack shows.

With the answer, in the same transaction, `execution.answered.<agent>` carries the click's
response_url: the slack role replaces the message's buttons with who answered what.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentrunner.domain.errors import ConflictError, ExecutionNotFoundError, PlanRunNotFoundError
from agentrunner.domain.execution import Execution, ExecutionStatus, slack_origin_of, utcnow
from agentrunner.domain.slack_tool_calls import SLACK_HAPPENED_RESULT, ToolCallAction, pause_token
from agentrunner.domain.tool_gates import DECISIONS, Decision, ToolCallAnswer
from agentrunner.logs import get_logger
from agentrunner.ports.state import PlanRunStore
from agentrunner.runtime.agent_run import COLLABORATION_KEY
from agentrunner.runtime.orchestrator import Orchestrator
from agentrunner.runtime.topics import tool_answered_topic
from agentrunner.tracing import current_tenant

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Click:
    """Who clicked, from where (as Slack signed it), and where the clicked message answers."""

    team_id: str
    user_id: str
    response_url: str


# A plan run's id is an execution id: longer is not one.
_MAX_RUN_ID = 128


async def slack_origin_for(execution: Execution, runs: PlanRunStore) -> dict[str, Any] | None:
    """The Slack request a question of `execution` goes to: its own origin (a run the
    Slack gateway started), or for a step of a collaborative run started from Slack, that
    run's. The step's link is the platform's: the plan run must list this execution as one
    of its steps, in its tenant (a task_data naming another run links to nothing)."""
    own = execution.slack_origin
    if own is not None:
        return own
    context = execution.input.get(COLLABORATION_KEY)
    run_id = context.get("run_id") if isinstance(context, dict) else None
    if not isinstance(run_id, str) or not 0 < len(run_id) <= _MAX_RUN_ID:
        return None
    try:
        run = await runs.get_plan_run(run_id)
    except PlanRunNotFoundError:
        return None
    if run.tenant != execution.tenant or not any(step.execution_id == execution.execution_id for step in run.steps):
        log.warning(
            "a step's link to a plan run is not the run's: no slack origin", execution_id=execution.execution_id
        )
        return None
    return slack_origin_of(run.origin)


async def answer_tool_call_click(
    orchestrator: Orchestrator, runs: PlanRunStore, action: ToolCallAction, click: Click
) -> bool:
    """Answer the execution `action` names with `action.decision`, when the rules of the
    module's doc allow it (True), else change nothing (False). Raises `AgentRunnerError`
    when the store cannot be read or written (Slack's retry of the click tries again)."""
    try:
        execution = await orchestrator.execution(action.execution_id)
    except ExecutionNotFoundError:
        log.warning("a tool call button names no execution: ignored", execution_id=action.execution_id)
        return False
    origin = await slack_origin_for(execution, runs)
    if (
        origin is None
        or execution.tenant != current_tenant()
        or not click.team_id
        or origin.get("team_id") != click.team_id
    ):
        # Told apart in the log only: the clicker learns nothing of other runs.
        log.warning(
            "a tool call button from outside the run's Slack workspace: ignored",
            execution_id=execution.execution_id,
            from_slack=origin is not None,
            team_id=click.team_id[:32],
        )
        return False
    pending = execution.pending_tool_call
    if (
        execution.status is not ExecutionStatus.WAITING_APPROVAL
        or pending is None
        or pending.answer is not None
        or pause_token(pending) != action.token
    ):
        log.info(
            "a tool call button clicked after its question was answered (or left): nothing done",
            execution_id=execution.execution_id,
            status=execution.status.value,
        )
        return False
    if action.decision not in DECISIONS[pending.reason]:
        log.warning(
            "a tool call button's answer does not answer its question: ignored",
            execution_id=execution.execution_id,
            reason=pending.reason.value,
            decision=action.decision.value,
        )
        return False
    answer = ToolCallAnswer(
        decision=action.decision,
        # No result to type in Slack: the model is told so, never a made-up result.
        result=SLACK_HAPPENED_RESULT if action.decision is Decision.HAPPENED else None,
        answered_at=utcnow(),
    )
    answered = orchestrator.event(
        tool_answered_topic(execution.agent),
        {
            "execution_id": execution.execution_id,
            "tool": pending.tool,
            "decision": action.decision.value,
            "token": action.token,
            "answered_by": click.user_id,
            "origin": {"source": "slack", "response_url": click.response_url},
        },
    )
    try:
        await orchestrator.answer_tool_call(execution, answer, events=[answered])
    except ConflictError:
        log.info(
            "a tool call was answered from two places at once: the first answer stands",
            execution_id=action.execution_id,
        )
        return False
    log.info(
        "tool call answered from slack",
        execution_id=execution.execution_id,
        decision=action.decision.value,
        user_id=click.user_id[:32],
    )
    return True
