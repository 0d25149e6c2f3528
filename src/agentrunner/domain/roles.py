"""The roles a process can take, named once: settings (ports), the node (what it starts)
and `cluster up` (what it runs) read them here.

HTTP roles serve an API on a port of their own; worker roles run agent pools and need
no port (a worker-only process serves its health probes on one it is given)."""

from __future__ import annotations

from typing import Literal, get_args

HttpRole = Literal["state", "config", "orchestrator", "scheduler", "slack"]
WorkerRole = Literal["autonomous", "continuous", "collaborative"]
AnyRole = Literal[HttpRole, WorkerRole]

HTTP_ROLES: tuple[HttpRole, ...] = get_args(HttpRole)
WORKER_ROLES: tuple[WorkerRole, ...] = get_args(WorkerRole)
ALL_ROLES: tuple[AnyRole, ...] = (*HTTP_ROLES, *WORKER_ROLES)
