"""The one error tree of agentrunner.

    AgentRunnerError                 code, message, context, retryable
    ├── ConfigError                  the user's configuration is wrong (config_invalid)
    │   └── AgentFileError           an agent file that cannot be loaded (domain/agent_document.py)
    │       ├── AgentFileRefusedError  refused before parsing: too big, anchors or aliases
    │       └── EvalFileError        an eval file that cannot be loaded (domain/eval_suite.py)
    ├── AgentNotFoundError           no agent of that name (agent_not_found)
    ├── AgentUnavailableError        the agent exists but cannot run (agent_unavailable)
    ├── AgentVersionNotFoundError    no version of that number for that agent (agent_version_not_found)
    ├── ExecutionNotFoundError       no execution with that id (execution_not_found)
    ├── StateNotFoundError           no state for that agent and session (state_not_found)
    ├── DeadLetterNotFoundError      no dead letter with that id (dead_letter_not_found)
    ├── ScheduleNotFoundError        no schedule with that id (schedule_not_found)
    ├── PlanRunNotFoundError         no plan run with that id (plan_run_not_found)
    ├── ClarificationNotFoundError   no such question in that run (clarification_not_found)
    ├── EvalSuiteNotFoundError       no eval file of that name (eval_suite_not_found)
    ├── EvalRunNotFoundError         no eval run with that id (eval_run_not_found)
    ├── PlanInvalidError             a plan that cannot run (plan_invalid)
    ├── StepFailedError              a step of a plan run failed, so the run did (step_failed)
    ├── ClarificationTimedOutError   a question unanswered in time, no default (clarification_timed_out)
    ├── BudgetExceededError          the agent spent its budget for the period (budget_exceeded)
    ├── BadRequestError              the request is malformed (bad_request)
    │   ├── EgressRefusedError       an outbound URL the egress guard refuses (egress_refused; domain/egress.py)
    │   ├── InputInvalidError        task_data that does not follow the agent's input_schema (input_invalid)
    │   └── StepOutOfRangeError      a replay from a step the execution does not have (step_out_of_range)
    ├── TopicReservedError           a publish on the platform's own topics (topic_reserved)
    ├── AdminOnlyError               an operator's action asked with a tenant's key (admin_only)
    ├── PayloadTooLargeError         an input over its size limit (payload_too_large)
    ├── TooManyStreamsError          a tenant's event streams at their cap (too_many_streams)
    ├── ConflictError                conflicts with what is stored (conflict)
    ├── SessionBusyError             a continuous agent's session is still answering (session_busy)
    ├── ExecutionCancelledError      cancelled on request (cancelled)
    │   └── PlanRejectedError        a plan held for approval was rejected (plan_rejected)
    ├── ExecutionTimedOutError       ran past its agent's or its schedule's timeout (timed_out)
    ├── ConsumerUnresponsiveError    an agent's consumer given up after its restarts (consumer_unresponsive)
    ├── ToolOutcomeUnknownError      a tool call a crash cut short, not safe to repeat (tool_outcome_unknown)
    ├── OutputInvalidError           the answer never followed the agent's output_schema (output_invalid)
    ├── CheckFailedError             the answer failed the agent's online checks, on_check_failure: fail (check_failed)
    ├── LLMError                     a provider call failed
    │   ├── LLMRateLimitError        429 / throttling (llm_rate_limited, retryable)
    │   ├── LLMUnavailableError      5xx, timeouts, refused (llm_unavailable, retryable)
    │   ├── LLMAuthError             bad or missing credentials (llm_auth)
    │   └── LLMBadRequestError       the vendor rejected the request (llm_bad_request)
    ├── SlackError                   a reply to Slack failed
    │   ├── SlackUnavailableError    unreachable, 5xx, still rate-limited (slack_unavailable, retryable)
    │   └── SlackRejectedError       Slack refused the message (slack_rejected)
    └── DependencyUnavailableError   a database, broker or cache is down (dependency_unavailable)

A test (tests/unit/test_error_tree.py) holds this drawing to every subclass in `domain/`.
Only `api/` maps these to HTTP statuses; the rest of the code raises them with a message
that says what was wrong, where, and what would be right.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AgentRunnerError(Exception):
    """Base of every error agentrunner raises on purpose."""

    code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message


class ConfigError(AgentRunnerError):
    """A user mistake in settings or agent YAML, found when it is loaded."""

    code = "config_invalid"


class AgentNotFoundError(AgentRunnerError):
    """No agent is registered under the requested name."""

    code = "agent_not_found"


class AgentUnavailableError(AgentRunnerError):
    """The agent is registered but cannot run now (bad config, provider without a key)."""

    code = "agent_unavailable"


class ExecutionNotFoundError(AgentRunnerError):
    """No execution has the requested id."""

    code = "execution_not_found"


class AgentVersionNotFoundError(AgentRunnerError):
    """The agent has no version of that number (`domain/agent_version.py`)."""

    code = "agent_version_not_found"


class StateNotFoundError(AgentRunnerError):
    """No agent state is stored for that agent and session."""

    code = "state_not_found"


class DeadLetterNotFoundError(AgentRunnerError):
    """No dead letter has that id."""

    code = "dead_letter_not_found"


class ScheduleNotFoundError(AgentRunnerError):
    """No schedule has that id."""

    code = "schedule_not_found"


class PlanRunNotFoundError(AgentRunnerError):
    """No plan run has that id."""

    code = "plan_run_not_found"


class ClarificationNotFoundError(AgentRunnerError):
    """The plan run has no question with that id."""

    code = "clarification_not_found"


class EvalSuiteNotFoundError(AgentRunnerError):
    """No eval file (`evals/<name>.yml`) has that name."""

    code = "eval_suite_not_found"


class EvalRunNotFoundError(AgentRunnerError):
    """No eval run has that id (or not one the caller may see)."""

    code = "eval_run_not_found"


class PlanInvalidError(AgentRunnerError):
    """A plan that cannot run: unknown agent, cycle, too many steps, dangling input."""

    code = "plan_invalid"


class StepFailedError(AgentRunnerError):
    """A step of a plan run did not succeed, so the run cannot."""

    code = "step_failed"


class ClarificationTimedOutError(AgentRunnerError):
    """A step's question was not answered within clarification_timeout_seconds and had no default."""

    code = "clarification_timed_out"


class BudgetExceededError(AgentRunnerError):
    """The agent spent its limits.budget_usd for the period: nothing more starts until it resets."""

    code = "budget_exceeded"


class BadRequestError(AgentRunnerError):
    """The caller sent something that cannot be acted on."""

    code = "bad_request"


class InputInvalidError(BadRequestError):
    """The task_data of an invocation does not follow its agent's `input_schema`; the
    message lists the problems found (the first few, each cut)."""

    code = "input_invalid"


class StepOutOfRangeError(BadRequestError):
    """A replay asked to start from a step past the end of the execution's journal."""

    code = "step_out_of_range"


class AdminOnlyError(AgentRunnerError):
    """An action on the whole platform (reloading agent files) asked with a tenant's key:
    it needs a key of ADMIN_API_KEYS."""

    code = "admin_only"


class TopicReservedError(AgentRunnerError):
    """A caller or a tool tried to publish on a topic the platform itself uses (or one its
    tool entry's `allowed_topics` does not list): only agentrunner writes its control plane."""

    code = "topic_reserved"


class PayloadTooLargeError(AgentRunnerError):
    """An input (body, task_data, history, agent document) over its size limit; the message
    names the limit and the setting that raises it."""

    code = "payload_too_large"


class TooManyStreamsError(AgentRunnerError):
    """The caller's tenant already has MAX_STREAMS_PER_TENANT event streams open."""

    code = "too_many_streams"


class ConflictError(AgentRunnerError):
    """The request conflicts with what is stored (a duplicate id, a stale version)."""

    code = "conflict"


class SessionBusyError(AgentRunnerError):
    """A continuous agent's session is still answering an earlier message (on_busy: reject)."""

    code = "session_busy"


class ExecutionCancelledError(AgentRunnerError):
    """The execution was cancelled on request."""

    code = "cancelled"


class PlanRejectedError(ExecutionCancelledError):
    """A plan held for approval was rejected: its run and execution end."""

    code = "plan_rejected"


class ExecutionTimedOutError(AgentRunnerError):
    """The execution ran past its time: the agent's `timeout_seconds`, or its schedule's."""

    code = "timed_out"


class ToolOutcomeUnknownError(AgentRunnerError):
    """A tool call started in a run that stopped before its outcome was recorded, is not
    safe to repeat, and the agent's `on_unknown_tool_outcome` (or a human) says to fail."""

    code = "tool_outcome_unknown"


class OutputInvalidError(AgentRunnerError):
    """The agent's answer did not follow its `output_schema`, after `output_retries` answers
    sent back with the problems found (`problems`). Not retried as a task: it was, already."""

    code = "output_invalid"

    def __init__(self, message: str, *, problems: tuple[str, ...] = (), **context: object) -> None:
        super().__init__(message, problems=list(problems), **context)
        self.problems = problems


class CheckFailedError(AgentRunnerError):
    """The agent's answer failed some of its online `checks`, and its `on_check_failure` is
    `fail` (`checks`: their labels). Not retried: the same answer would fail them again."""

    code = "check_failed"

    def __init__(self, message: str, *, checks: tuple[str, ...] = (), **context: object) -> None:
        super().__init__(message, checks=list(checks), **context)
        self.checks = checks


class ConsumerUnresponsiveError(AgentRunnerError):
    """An agent's consumer stopped answering (an attempt overran its timeout and could not
    be stopped) and was given up on after its restarts."""

    code = "consumer_unresponsive"


class LLMError(AgentRunnerError):
    """A call to an LLM provider failed."""

    code = "llm_error"


class LLMRateLimitError(LLMError):
    """The provider throttled the call; try again later."""

    code = "llm_rate_limited"
    retryable = True


class LLMUnavailableError(LLMError):
    """The provider could not be reached or failed on its side."""

    code = "llm_unavailable"
    retryable = True


class LLMAuthError(LLMError):
    """The provider refused the credentials, or none were configured."""

    code = "llm_auth"


class LLMBadRequestError(LLMError):
    """The provider rejected the request itself (bad model, context too long, ...)."""

    code = "llm_bad_request"


class SlackError(AgentRunnerError):
    """A message to Slack (response_url or Web API) was not delivered."""

    code = "slack_error"


class SlackUnavailableError(SlackError):
    """Slack could not be reached, failed on its side, or still rate-limits after retries."""

    code = "slack_unavailable"
    retryable = True


class SlackRejectedError(SlackError):
    """Slack refused the message itself (bad token, unknown channel, expired response_url)."""

    code = "slack_rejected"


class DependencyUnavailableError(AgentRunnerError):
    """A backing service (database, broker, cache) is not answering."""

    code = "dependency_unavailable"
    retryable = True
