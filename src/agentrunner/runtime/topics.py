"""The topics and queue names the runtime publishes and consumes."""

from __future__ import annotations

# The chain headers are part of the wire format, defined beside the reserved topics.
from agentrunner.domain.topics import CHAIN_DEPTH_HEADER, TENANT_HEADER

__all__ = [
    "CANCEL_PATTERN",
    "CHAIN_DEPTH_HEADER",
    "FINISHED_PATTERN",
    "SCHEDULED_TASKS",
    "TENANT_HEADER",
    "agent_queue",
    "cancel_topic",
    "finished_topic",
    "invoke_topic",
    "output_topic",
    "progress_pattern",
    "progress_topic",
]


def invoke_topic(agent: str) -> str:
    """Topic of a request to run `agent` (payload: execution_id)."""
    return f"invoke.{agent}"


def finished_topic(agent: str) -> str:
    """Topic announcing that an execution of `agent` reached a terminal status."""
    return f"execution.finished.{agent}"


FINISHED_PATTERN = "execution.finished.#"


def output_topic(agent: str) -> str:
    """Topic of an agent's successful output; agents subscribed to it run next (chains)."""
    return f"agent.output.{agent}"


def agent_queue(agent: str) -> str:
    """The durable work queue of `agent`."""
    return f"agent.{agent}"


CANCEL_PATTERN = "execution.cancel.#"


def cancel_topic(agent: str) -> str:
    """Topic asking the worker that runs an execution of `agent` to stop it."""
    return f"execution.cancel.{agent}"


def progress_topic(agent: str, execution_id: str) -> str:
    """Topic of an execution's progress: status changes and pieces of streamed text. Bound
    only while somebody watches that execution, so unwatched progress costs no delivery."""
    return f"execution.progress.{agent}.{execution_id}"


def progress_pattern(execution_id: str) -> str:
    """The pattern a watcher of one execution binds."""
    return f"execution.progress.*.{execution_id}"


# Announces each scheduled run (payload: agent, schedule_id, scheduled_time, task_data,
# execution_id); the run itself goes through `invoke.<agent>`.
SCHEDULED_TASKS = "scheduled.tasks"
