"""Collaborative runs: a plan of steps assigned to agents, its run, and the questions its
steps ask a human (the plan / plan-run / clarification model the seed's Portia names).

Pure rules, no I/O: how a plan is validated, which steps are ready, how a step's agent
asks a human, and how an answer is checked against its question.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentrunner.domain.errors import PlanInvalidError
from agentrunner.domain.execution import ExecutionError, Usage, utcnow
from agentrunner.domain.llm import ToolDefinition
from agentrunner.domain.tool_gates import PendingToolCall

STEP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$"


class PlanRunStatus(StrEnum):
    """Where a plan run is in its life."""

    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    NEEDS_CLARIFICATION = "needs_clarification"
    # Nothing can run until a step's tool call is answered: that step's execution waits
    # before it (`waiting_approval`: an approval gate, or an outcome a crash left unknown).
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in {PlanRunStatus.SUCCEEDED, PlanRunStatus.FAILED, PlanRunStatus.REJECTED, PlanRunStatus.CANCELLED}

    @property
    def is_paused(self) -> bool:
        """Waiting for a human: nothing runs until an approval or an answer comes."""
        return self in {PlanRunStatus.AWAITING_APPROVAL, *STEP_PAUSES}


# A run paused by its steps (a question, a tool call waiting): an answer resumes it.
STEP_PAUSES = frozenset({PlanRunStatus.NEEDS_CLARIFICATION, PlanRunStatus.WAITING_APPROVAL})


class StepStatus(StrEnum):
    """Where a step is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    NEEDS_CLARIFICATION = "needs_clarification"
    # Its execution waits for a human before a tool call (the execution's
    # `pending_tool_call`): approved, denied or answered there, it runs on.
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ClarificationKind(StrEnum):
    """What kind of answer a question takes."""

    TEXT = "text"
    CHOICE = "choice"
    CONFIRM = "confirm"


class ClarificationStatus(StrEnum):
    """Whether a question has its answer."""

    PENDING = "pending"
    ANSWERED = "answered"
    # Unanswered in time: the declared default was taken, or the run failed.
    DEFAULTED = "defaulted"
    EXPIRED = "expired"


class PlanStep(BaseModel):
    """One step: which agent does what, with the outputs of which earlier steps."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(pattern=STEP_ID_PATTERN)
    agent: str = Field(min_length=1)
    instruction: str = Field(min_length=1)
    # Steps whose outputs this step reads (each is also a dependency).
    inputs: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)

    @property
    def needs(self) -> frozenset[str]:
        """Every step that must finish before this one starts."""
        return frozenset({*self.inputs, *self.depends_on})


class Plan(BaseModel):
    """The steps of a collaborative run, each after the steps it needs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    steps: list[PlanStep] = Field(min_length=1)

    def step(self, step_id: str) -> PlanStep:
        """The step with that id (KeyError when absent)."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def ready(self, done: set[str], started: set[str]) -> list[PlanStep]:
        """Steps not started whose needs are all done: what may run now, together."""
        return [step for step in self.steps if step.id not in started and step.needs <= done]


class StepRun(BaseModel):
    """What happened to one step of a run."""

    model_config = ConfigDict(frozen=True)

    step_id: str
    agent: str
    # The version of its agent it runs on, every attempt: the one loaded when the plan was
    # made (runtime/collaboration.py), so a step agent's file edited mid-run changes nothing
    # of the run. None: not known (a run planned before versions, an agent not numbered).
    agent_version: int | None = None
    status: StepStatus = StepStatus.PENDING
    execution_id: str | None = None
    output: str | None = None
    error: ExecutionError | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None
    # Executions of the step: one more after each answered question.
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Clarification(BaseModel):
    """A question a step's agent asked a human; the run waits for its answer."""

    model_config = ConfigDict(frozen=True)

    id: str
    run_id: str
    step_id: str
    question: str
    kind: ClarificationKind = ClarificationKind.TEXT
    options: list[str] = Field(default_factory=list)
    default: str | None = None
    answer: str | None = None
    answered_by: str | None = None
    status: ClarificationStatus = ClarificationStatus.PENDING
    asked_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    answered_at: datetime | None = None


class WaitingStep(BaseModel):
    """A step whose execution waits for a human before a tool call, and that call. It is
    answered on the execution (`POST /executions/{execution_id}/approve`, `/deny`,
    `/tool-outcome`); the step, then its run, go on."""

    model_config = ConfigDict(frozen=True)

    step_id: str
    agent: str
    execution_id: str
    pending_tool_call: PendingToolCall


class PlanRun(BaseModel):
    """One run of a collaborative agent: its task, plan, steps, questions and result.

    Its id is the id of the execution that started it, so `GET /executions/{id}` and
    `wait` work as for any agent. `version` grows with every save (optimistic writes).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    agent: str
    task: dict[str, Any] = Field(default_factory=dict)
    status: PlanRunStatus = PlanRunStatus.PLANNING
    plan: Plan | None = None
    # What the steps share: their outputs by step id, readable by later steps.
    state: dict[str, Any] = Field(default_factory=dict)
    # Where the task came from (the Slack channel and thread, ...), for announcements.
    origin: dict[str, Any] | None = None
    result: str | None = None
    # The result parsed, when the agent has an `output_schema` its synthesis followed.
    result_json: Any = None
    error: ExecutionError | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None
    trace_id: str
    # The tenant of the execution that started it: who may read, approve and answer it.
    tenant: str | None = None
    version: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    steps: list[StepRun] = Field(default_factory=list)
    clarifications: list[Clarification] = Field(default_factory=list)

    def step_run(self, step_id: str) -> StepRun | None:
        """The record of a step, if it has one."""
        return next((step for step in self.steps if step.step_id == step_id), None)

    def clarification(self, clarification_id: str) -> Clarification | None:
        """The question with that id, if the run has it."""
        return next((c for c in self.clarifications if c.id == clarification_id), None)


def plan_problems(plan: Plan, *, agents: set[str], max_steps: int) -> list[str]:
    """Everything wrong with `plan` for a run whose steps may use `agents`, each problem
    saying what is wrong and what would be right; empty when it can run."""
    problems: list[str] = []
    if len(plan.steps) > max_steps:
        problems.append(f"the plan has {len(plan.steps)} steps, more than max_plan_steps ({max_steps}): merge steps")
    ids = [step.id for step in plan.steps]
    repeated = sorted({step_id for step_id in ids if ids.count(step_id) > 1})
    if repeated:
        problems.append(f"step ids must be unique, repeated: {', '.join(repeated)}")
    known = set(ids)
    for step in plan.steps:
        if step.agent not in agents:
            choices = ", ".join(sorted(agents))
            problems.append(f"step {step.id!r} is assigned to unknown agent {step.agent!r}: choose one of {choices}")
        for field, names in (("inputs", step.inputs), ("depends_on", step.depends_on)):
            for name in names:
                if name == step.id:
                    problems.append(f"step {step.id!r} names itself in {field}")
                elif name not in known:
                    problems.append(f"step {step.id!r} {field} names step {name!r}, which the plan does not have")
    if not problems:
        cycle = _cycle(plan)
        if cycle:
            problems.append(f"the steps depend on each other in a cycle: {' -> '.join(cycle)}")
    return problems


def _cycle(plan: Plan) -> list[str]:
    """A dependency cycle of `plan` as step ids (first repeated at the end), or []."""
    needs = {step.id: sorted(step.needs) for step in plan.steps}
    visiting: list[str] = []
    finished: set[str] = set()

    def visit(step_id: str) -> list[str]:
        if step_id in finished:
            return []
        if step_id in visiting:
            return [*visiting[visiting.index(step_id) :], step_id]
        visiting.append(step_id)
        for need in needs.get(step_id, []):
            found = visit(need)
            if found:
                return found
        visiting.pop()
        finished.add(step_id)
        return []

    for step_id in needs:
        found = visit(step_id)
        if found:
            return found
    return []


def parse_plan(data: Any, *, agents: set[str], max_steps: int) -> Plan:
    """A valid plan from a planner's answer (a dict, or JSON text, maybe in a code fence);
    raises `PlanInvalidError` saying everything wrong with it."""
    if isinstance(data, str):
        text = data.strip()
        if text.startswith("```"):
            text = text.strip("`").removeprefix("json").strip()
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise PlanInvalidError(f'the plan is not valid JSON ({exc}): answer with {{"steps": [...]}}') from exc
    if isinstance(data, list):
        data = {"steps": data}
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'plan'}: {e['msg']}" for e in exc.errors())
        raise PlanInvalidError(f"the plan does not have the expected shape: {details}") from exc
    problems = plan_problems(plan, agents=agents, max_steps=max_steps)
    if problems:
        raise PlanInvalidError("the plan cannot run: " + "; ".join(problems), problems=problems)
    return plan


def step_execution_id(run_id: str, step_id: str, attempt: int) -> str:
    """The execution of a step's `attempt`: the same on every resume, so a resumed run
    finds the execution it started instead of starting another."""
    return hashlib.sha256(f"{run_id}\0{step_id}\0{attempt}".encode()).hexdigest()[:32]


def clarification_id(run_id: str, step_id: str, attempt: int) -> str:
    """The question a step's `attempt` asked (one per attempt: asking ends the attempt)."""
    return hashlib.sha256(f"clarification\0{run_id}\0{step_id}\0{attempt}".encode()).hexdigest()[:24]


# -- what the planner and the step agents are offered -------------------------------

PLAN_TOOL = ToolDefinition(
    name="submit_plan",
    description="Submit the plan: the steps, each assigned to one of the participating agents.",
    parameters={
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "description": "Short unique id, e.g. 'research'."},
                        "agent": {"type": "string", "description": "Name of a participating agent."},
                        "instruction": {"type": "string", "description": "What the agent must do."},
                        "inputs": {"type": "array", "items": {"type": "string"}, "description": "Step ids to read."},
                        "depends_on": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["id", "agent", "instruction"],
                },
            }
        },
        "required": ["steps"],
    },
)

ASK_HUMAN_TOOL = ToolDefinition(
    name="ask_human",
    description=(
        "Ask a human a question when the task cannot be done well without their answer. "
        "The run pauses until they answer; you are then asked again with the answer."
    ),
    parameters={
        "type": "object",
        "properties": {
            "question": {"type": "string"},
            "kind": {"type": "string", "enum": [kind.value for kind in ClarificationKind]},
            "options": {"type": "array", "items": {"type": "string"}, "description": "For kind 'choice'."},
            "default": {"type": "string", "description": "Taken when nobody answers in time."},
        },
        "required": ["question"],
    },
)

# The answer of a step whose agent called `ask_human`: a JSON object under this one key.
# The agent loop writes it as the execution's output; the collaborative runtime reads it.
ASK_HUMAN_MARKER = "agentrunner.ask_human"


class ClarificationRequest(BaseModel):
    """What a step's agent asked through `ask_human`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    question: str = Field(min_length=1)
    kind: ClarificationKind = ClarificationKind.TEXT
    options: list[str] = Field(default_factory=list)
    default: str | None = None


def ask_human_output(arguments: dict[str, Any]) -> str:
    """The output that records an `ask_human` call (arguments as the model gave them)."""
    return orjson.dumps({ASK_HUMAN_MARKER: arguments}).decode()


def asked_human(output: str | None) -> ClarificationRequest | None:
    """The question a step's output asks, or None for a plain answer. A malformed call
    (no question) reads as a question asking for one, so it is never silently lost."""
    if not output or ASK_HUMAN_MARKER not in output:
        return None
    try:
        data = orjson.loads(output)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or set(data) != {ASK_HUMAN_MARKER}:
        return None
    arguments = data[ASK_HUMAN_MARKER]
    try:
        request = ClarificationRequest.model_validate(arguments)
    except ValidationError:
        return ClarificationRequest(question=str(arguments))
    if request.kind is ClarificationKind.CHOICE and not request.options:
        return request.model_copy(update={"kind": ClarificationKind.TEXT})
    return request


_YES = {"yes", "y", "true", "confirm", "confirmed", "ok"}
_NO = {"no", "n", "false", "deny", "denied", "cancel"}


def checked_answer(clarification: Clarification, answer: str) -> str:
    """The answer as stored for `clarification`: a choice must be one of its options, a
    confirmation yes or no (normalised). Raises `ValueError` saying what would be right."""
    answer = answer.strip()
    if not answer:
        raise ValueError("the answer is empty")
    if clarification.kind is ClarificationKind.CHOICE and answer not in clarification.options:
        raise ValueError(f"answer {answer!r} is not one of the options: {', '.join(clarification.options)}")
    if clarification.kind is ClarificationKind.CONFIRM:
        if answer.lower() in _YES:
            return "yes"
        if answer.lower() in _NO:
            return "no"
        raise ValueError(f"answer {answer!r} does not confirm: answer 'yes' or 'no'")
    return answer
