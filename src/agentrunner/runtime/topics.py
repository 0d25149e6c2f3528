"""The catalogue of the topics, patterns and queue names the platform publishes and consumes.

Every one is built here and nowhere else: a new topic is a function (or constant) in this
module, under one of the reserved roots of `domain/topics.py` (a test checks both). Topic
words that come from outside (a Slack command, a run id) are made valid by the caller
(`slack_gateway.topic_word`) before they reach a builder.
"""

from __future__ import annotations

# The chain headers are part of the wire format, defined beside the reserved topics.
from agentrunner.domain.topics import CHAIN_DEPTH_HEADER, TENANT_HEADER

__all__ = [
    "CANCEL_PATTERN",
    "CHAIN_DEPTH_HEADER",
    "CLARIFICATION_ANSWERED_PATTERN",
    "CLARIFICATION_REQUESTED_PATTERN",
    "COLLABORATIVE_ANSWERS_QUEUE",
    "CONFIG_CHANGED",
    "FINISHED_PATTERN",
    "SCHEDULED_TASKS",
    "SLACK_ANSWERS_QUEUE",
    "SLACK_CLARIFICATIONS_QUEUE",
    "SLACK_TOOL_CALLS_QUEUE",
    "TENANT_HEADER",
    "TOOL_ANSWERED_PATTERN",
    "WAITING_PATTERN",
    "agent_queue",
    "budget_warning_topic",
    "cancel_topic",
    "cancelled_agent",
    "clarification_answered_topic",
    "clarification_requested_topic",
    "collaborative_finished_queue",
    "completed_topic",
    "finished_topic",
    "invoke_topic",
    "is_clarification_answer",
    "is_finished_topic",
    "is_tool_answered_topic",
    "node_config_queue",
    "orchestrator_queue",
    "output_topic",
    "plan_approval_requested_topic",
    "progress_pattern",
    "progress_topic",
    "slack_command_topic",
    "slack_event_topic",
    "slack_interaction_topic",
    "tool_answered_topic",
    "waiting_topic",
    "worker_cancel_queue",
]

# Executions: work, results and control.


def invoke_topic(agent: str) -> str:
    """Topic of a request to run `agent` (payload: execution_id)."""
    return f"invoke.{agent}"


def agent_queue(agent: str) -> str:
    """The durable work queue of `agent`."""
    return f"agent.{agent}"


def finished_topic(agent: str) -> str:
    """Topic announcing that an execution of `agent` reached a terminal status."""
    return f"execution.finished.{agent}"


FINISHED_PATTERN = "execution.finished.#"


def is_finished_topic(topic: str) -> bool:
    """True for a `finished_topic` (a queue bound to it may hear progress too)."""
    return topic.startswith("execution.finished.")


def waiting_topic(agent: str) -> str:
    """Topic announcing that an execution of `agent` waits for a human before a tool call
    (status `waiting_approval`; payload: execution_id, pending_tool_call)."""
    return f"execution.waiting.{agent}"


WAITING_PATTERN = "execution.waiting.#"


def is_waiting_topic(topic: str) -> bool:
    """True for a `waiting_topic`."""
    return topic.startswith("execution.waiting.")


def tool_answered_topic(agent: str) -> str:
    """Topic of a human's answer, given in Slack, to the tool call an execution of `agent`
    waited on (payload: execution_id, decision, answered_by, and the click's origin)."""
    return f"execution.answered.{agent}"


TOOL_ANSWERED_PATTERN = "execution.answered.#"


def is_tool_answered_topic(topic: str) -> bool:
    """True for a `tool_answered_topic`."""
    return topic.startswith("execution.answered.")


def output_topic(agent: str) -> str:
    """Topic of an agent's successful output; agents subscribed to it run next (chains)."""
    return f"agent.output.{agent}"


def cancel_topic(agent: str) -> str:
    """Topic asking the worker that runs an execution of `agent` to stop it."""
    return f"execution.cancel.{agent}"


CANCEL_PATTERN = "execution.cancel.#"


def cancelled_agent(topic: str) -> str | None:
    """The agent a `cancel_topic` names, or None for any other topic."""
    return topic.rsplit(".", 1)[1] if topic.startswith("execution.cancel.") else None


def progress_topic(agent: str, execution_id: str) -> str:
    """Topic of an execution's progress: status changes and pieces of streamed text. Bound
    only while somebody watches that execution, so unwatched progress costs no delivery."""
    return f"execution.progress.{agent}.{execution_id}"


def progress_pattern(execution_id: str) -> str:
    """The pattern a watcher of one execution binds."""
    return f"execution.progress.*.{execution_id}"


def worker_cancel_queue(worker_id: str) -> str:
    """The exclusive queue where a worker process hears cancel requests."""
    return f"worker.{worker_id}.cancel"


def orchestrator_queue(node_id: str) -> str:
    """The exclusive queue where an orchestrator hears finished executions (and the
    progress of those somebody watches)."""
    return f"orchestrator.{node_id}.finished"


# Announces each scheduled run (payload: agent, schedule_id, scheduled_time, task_data,
# execution_id); the run itself goes through `invoke.<agent>`.
SCHEDULED_TASKS = "scheduled.tasks"


def budget_warning_topic(agent: str) -> str:
    """Topic announcing that `agent` passed 80% of its budget (once per period)."""
    return f"budget.warning.{agent}"


# Configuration: a node that changed the agents tells the others to reload theirs.
CONFIG_CHANGED = "config.changed"


def node_config_queue(node_id: str) -> str:
    """The exclusive queue where a node hears `CONFIG_CHANGED`."""
    return f"node.{node_id}.config"


# Plan runs (collaborative agents) and their questions to humans.


def completed_topic(run_id: str) -> str:
    """Topic announcing that a plan run ended (payload: run_id, status, result)."""
    return f"collaboration.completed.{run_id}"


def plan_approval_requested_topic(run_id: str) -> str:
    """Topic announcing a plan held for approval (payload: run_id, agent, plan)."""
    return f"plan.approval.requested.{run_id}"


def clarification_requested_topic(run_id: str) -> str:
    """Topic announcing a question a run's step asks a human."""
    return f"clarification.requested.{run_id}"


CLARIFICATION_REQUESTED_PATTERN = "clarification.requested.#"


def clarification_answered_topic(run_id: str) -> str:
    """Topic of an answer to a run's question (the Slack gateway publishes it)."""
    return f"clarification.answered.{run_id}"


CLARIFICATION_ANSWERED_PATTERN = "clarification.answered.#"


def is_clarification_answer(topic: str) -> bool:
    """True for a `clarification_answered_topic`."""
    return topic.startswith("clarification.answered.")


def collaborative_finished_queue(worker_id: str) -> str:
    """The exclusive queue where a collaborative worker hears its steps end and cancels."""
    return f"collaborative.{worker_id}.finished"


# Shared by the collaborative workers: each answer from the bus is taken by one of them.
COLLABORATIVE_ANSWERS_QUEUE = "collaborative.answers"

# Slack: what it asks of the platform, and the slack role's queues.


def slack_command_topic(command: str) -> str:
    """Topic of a slash command (`command`: its name without '/', as one topic word)."""
    return f"slack.command.{command}"


def slack_event_topic(kind: str) -> str:
    """Topic of a Slack Events API event (`kind`: its type, as one topic word)."""
    return f"slack.event.{kind}"


def slack_interaction_topic(name: str) -> str:
    """Topic of a Slack interaction (`name`: the action id of a button, or the type of
    another interaction, as one topic word)."""
    return f"slack.interaction.{name}"


# Queues of the slack role, shared by its replicas: each reply is sent by one of them.
SLACK_ANSWERS_QUEUE = "slack.answers"
SLACK_CLARIFICATIONS_QUEUE = "slack.clarifications"
SLACK_TOOL_CALLS_QUEUE = "slack.tool_calls"
