"""The coordinating agent's own model calls in a collaborative run: writing the plan
(through the provider's tool call, or JSON text), and the final synthesis of the steps'
outputs. The steps themselves run as invocations of their agents (runtime/collaboration.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from agentrunner.domain.agent import AgentConfig, ExecutionMode, LLMConfig
from agentrunner.domain.errors import PlanInvalidError
from agentrunner.domain.llm import Completion, LLMRequest, Message, Spend
from agentrunner.domain.plan import PLAN_TOOL, Plan, PlanRun, parse_plan
from agentrunner.ports.providers import ProviderCatalog
from agentrunner.runtime.agent_run import run_agent, user_prompt
from agentrunner.runtime.llm_calls import complete_with_retries
from agentrunner.runtime.registry import AgentRegistry

# The tag of a remote (A2A) member of a planner's team.
A2A_TAG = "a2a"

PLANNER_PROMPT = """You plan the work of a team of AI agents.
Split the task into steps; assign each step to the participating agent best suited to it
(by its description and tags); give each step a short unique id, a precise instruction,
the ids of earlier steps whose outputs it needs (`inputs`) and of steps it must wait for
(`depends_on`). Steps that do not need each other run in parallel. Use at most {max_steps}
steps, and only the participating agents. Answer by calling the `submit_plan` tool (or, if
you cannot call tools, with the JSON object {{"steps": [...]}} alone)."""

SYNTHESIS_PROMPT = """The steps of your team's plan are done. Combine their outputs into the
final answer to the task: complete, consistent, and in the form the task asks for."""


@dataclass(frozen=True, slots=True)
class Participant:
    """An agent a plan may assign steps to, as the planner sees it."""

    name: str
    description: str
    tags: tuple[str, ...]
    preferred: bool


def participants(config: AgentConfig, registry: AgentRegistry) -> list[Participant]:
    """The agents `config`'s plans may use: its `preferred_collaborators` that can run, then
    every other available agent that is not collaborative (runs do not nest), then the
    remote agents of its `type: a2a` tool entries (under their entry names; a local agent
    of the same name wins) that are not preferred (runtime/remote_steps.py)."""
    collaborative = config.collaborative_config
    preferred = collaborative.preferred_collaborators if collaborative else []
    available = {
        agent.name: (agent.description, tuple(agent.tags))
        for agent in registry.in_modes(frozenset(ExecutionMode) - {ExecutionMode.COLLABORATIVE})
        if agent.name != config.name
    }
    remote = {
        entry.name: (entry.description or f"A remote agent reached over A2A ({entry.name})", (A2A_TAG,))
        for entry in config.tools
        if entry.type == "a2a" and entry.name not in available and entry.name != config.name
    }
    ordered = [name for name in preferred if name in available or name in remote]
    ordered += sorted(set(available) - set(ordered))
    ordered += [name for name in remote if name not in ordered]
    team = available | remote
    return [Participant(name, team[name][0], team[name][1], name in preferred) for name in ordered]


def planner_llm(config: AgentConfig) -> LLMConfig:
    """The model that plans: `collaborative_config.planning_agent` over the agent's own."""
    planning = config.collaborative_config.planning_agent if config.collaborative_config else None
    if planning is None:
        return config.llm_config
    changes: dict[str, Any] = {
        key: value
        for key, value in (
            ("provider", planning.provider),
            ("model", planning.model),
            ("temperature", planning.temperature),
        )
        if value is not None
    }
    return config.llm_config.model_copy(update=changes)


async def make_plan(
    config: AgentConfig,
    catalog: ProviderCatalog,
    task: dict[str, Any],
    team: list[Participant],
    spend: Spend,
    *,
    retry_base_seconds: float = 0.5,
) -> Plan:
    """A valid plan for `task` over `team`. An invalid answer is asked for again once, with
    what was wrong; raises `PlanInvalidError` when the second is invalid too (or
    `LLMError` when the planner cannot be reached)."""
    llm = planner_llm(config)
    provider = await catalog.provider_for(llm)
    max_steps = config.collaborative_config.max_plan_steps if config.collaborative_config else 10
    team_text = orjson.dumps(
        [{"name": p.name, "description": p.description, "tags": list(p.tags), "preferred": p.preferred} for p in team],
        option=orjson.OPT_INDENT_2,
    ).decode()
    messages = [
        Message(role="system", content=PLANNER_PROMPT.format(max_steps=max_steps)),
        Message(role="user", content=f"Task:\n{user_prompt(task)}\n\nParticipating agents:\n{team_text}"),
    ]
    agents = {p.name for p in team}
    first_error: PlanInvalidError | None = None
    for _ in range(2):
        request = LLMRequest(
            model=llm.model,
            messages=messages,
            temperature=llm.temperature,
            max_tokens=llm.max_tokens,
            tools=[PLAN_TOOL],
        )
        completion = await complete_with_retries(provider, request, llm, base_delay_seconds=retry_base_seconds)
        spend.add(completion)
        call = next((c for c in completion.tool_calls if c.name == PLAN_TOOL.name), None)
        try:
            return parse_plan(call.arguments if call else completion.text, agents=agents, max_steps=max_steps)
        except PlanInvalidError as exc:
            if first_error is not None:
                raise PlanInvalidError(
                    f"the planner's plan was invalid twice; first: {first_error.message}; then: {exc.message}"
                ) from exc
            first_error = exc
            messages += _correction(completion, exc)
    raise AssertionError("unreachable: the second invalid plan raises")


def _correction(completion: Completion, error: PlanInvalidError) -> list[Message]:
    """The planner's answer and what was wrong with it, to ask for a corrected plan."""
    ask = f"That plan is invalid: {error.message}. Submit a corrected plan."
    if not completion.tool_calls:
        return [Message(role="assistant", content=completion.text), Message(role="user", content=ask)]
    answers = [Message(role="tool", content=ask, tool_call_id=call.id) for call in completion.tool_calls]
    return [Message(role="assistant", content=completion.text, tool_calls=completion.tool_calls), *answers]


async def synthesize(
    config: AgentConfig, catalog: ProviderCatalog, run: PlanRun, spend: Spend, *, retry_base_seconds: float = 0.5
) -> Completion:
    """The final answer of `run`: the coordinating agent (its own llm_config and system
    prompt) over the outputs of every step, asked as an autonomous agent is (`run_agent`,
    without tools): with an `output_schema`, an answer that does not follow it is sent back
    with the problems found, `output_retries` times at most, and the answer is the parsed
    JSON (`output_json`, and as compact text). Every call is counted in `spend` as it is
    made, an answer refused too. Raises `LLMError`, `OutputInvalidError`."""
    outputs = "\n\n".join(
        f"## Step {step.step_id} ({step.agent})\n{step.output or ''}" for step in run.steps if step.output
    )
    task = {"prompt": f"{SYNTHESIS_PROMPT}\n\nTask:\n{user_prompt(run.task)}\n\n{outputs}"}
    provider = await catalog.provider_for(config.llm_config)
    return await run_agent(config, provider, task, retry_base_seconds=retry_base_seconds, on_model_call=spend.add)
