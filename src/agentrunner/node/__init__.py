"""The composition root: builds the adapters that settings select (`building`), wires them
into the runtime (`core`), starts, reloads and stops them by the role table (`lifecycle`),
builds the role apps (`apps`) and serves them (`serving`). Nothing else constructs adapters."""

from agentrunner.domain.roles import ALL_ROLES, HTTP_ROLES, WORKER_ROLES
from agentrunner.node.apps import QUEUE_DEPTH_TIMEOUT_SECONDS
from agentrunner.node.building import retention_windows
from agentrunner.node.core import Node
from agentrunner.node.serving import event_loop_factory, freeze_heap, run_on_loop, serve

__all__ = [
    "ALL_ROLES",
    "HTTP_ROLES",
    "QUEUE_DEPTH_TIMEOUT_SECONDS",
    "WORKER_ROLES",
    "Node",
    "event_loop_factory",
    "freeze_heap",
    "retention_windows",
    "run_on_loop",
    "serve",
]
