"""A Python client of agentrunner's API, for applications: `Client` (blocking) and
`AsyncClient` (asyncio), on httpx.

    from agentrunner.client import Client

    with Client("http://127.0.0.1:8003", api_key="...") as client:
        execution = client.invoke("my-assistant", "What is the capital of France?")
        print(execution.output)

It loads the API's answer models and the domain they are made of, nothing of the platform
that runs agents (a contract in pyproject.toml keeps it so)."""

from agentrunner.api.models import (
    Accepted,
    AgentDetailView,
    AgentView,
    ExecutionDetail,
    ExecutionList,
    ExecutionListItem,
    PlanRunView,
    Published,
)
from agentrunner.client.aio import AsyncClient
from agentrunner.client.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientError,
    ConflictError,
    ConnectionFailedError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    WaitTimeoutError,
)
from agentrunner.client.sync import Client
from agentrunner.client.wire import START, InvokeResult, StreamEvent
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.plan import PlanRun

__all__ = [
    "START",
    "APIError",
    "Accepted",
    "AgentDetailView",
    "AgentView",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ClientError",
    "ConflictError",
    "ConnectionFailedError",
    "Execution",
    "ExecutionDetail",
    "ExecutionList",
    "ExecutionListItem",
    "ExecutionStatus",
    "InvokeResult",
    "NotFoundError",
    "PermissionDeniedError",
    "PlanRun",
    "PlanRunView",
    "Published",
    "RateLimitedError",
    "ServerError",
    "StreamEvent",
    "WaitTimeoutError",
]
