"""The topics and queue names the runtime publishes and consumes."""

from __future__ import annotations


def invoke_topic(agent: str) -> str:
    """Topic of a request to run `agent` (payload: execution_id)."""
    return f"invoke.{agent}"


def finished_topic(agent: str) -> str:
    """Topic announcing that an execution of `agent` reached a terminal status."""
    return f"execution.finished.{agent}"


FINISHED_PATTERN = "execution.finished.#"


def agent_queue(agent: str) -> str:
    """The durable work queue of `agent`."""
    return f"agent.{agent}"
