"""The trace id and service name of the work in progress, carried in contextvars.

An edge (HTTP request, Slack call, consumed event) sets the trace id; every log line and
every published event reads it from here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

_trace_id: ContextVar[str | None] = ContextVar("agentrunner_trace_id", default=None)
_service: ContextVar[str | None] = ContextVar("agentrunner_service", default=None)
_tenant: ContextVar[str | None] = ContextVar("agentrunner_tenant", default=None)
_admin: ContextVar[bool] = ContextVar("agentrunner_admin", default=False)
_VALID_TRACE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_trace_id() -> str:
    """A fresh trace id."""
    return uuid.uuid4().hex


def accept_trace_id(candidate: str | None) -> str:
    """The caller's trace id when it is safe to log and forward, else a fresh one."""
    if candidate and _VALID_TRACE.match(candidate):
        return candidate
    return new_trace_id()


def current_trace_id() -> str | None:
    """The trace id of the work in progress, if an edge set one."""
    return _trace_id.get()


def current_service() -> str | None:
    """The role doing the work in progress, if one was set."""
    return _service.get()


@contextmanager
def traced(trace_id: str, service: str | None = None) -> Iterator[str]:
    """Run a block under `trace_id` (and `service`), restoring the previous values after."""
    trace_token = _trace_id.set(trace_id)
    service_token = _service.set(service) if service else None
    try:
        yield trace_id
    finally:
        _trace_id.reset(trace_token)
        if service_token is not None:
            _service.reset(service_token)


def tenant_of_key(key: bytes, secret: bytes) -> str:
    """The tenant a bare API key (one without a tenant name) stands for: an HMAC-SHA256 of
    the key under the server's `secret`, so the id, shown in answers and logs, lets no one
    test guesses of the key without that secret."""
    return f"key-{hmac.new(secret, key, hashlib.sha256).hexdigest()[:16]}"


def current_tenant() -> str | None:
    """The tenant of the work in progress: the owner recorded on what it creates, and the
    one its budgets and limits count against. None with API auth off (one implicit tenant)."""
    return _tenant.get()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who the work in progress is done for: a tenant, and whether its key is an admin's
    (an admin sees and acts across tenants). `tenant` None: auth is off."""

    tenant: str | None
    admin: bool = False


def current_caller() -> Caller:
    """The caller of the work in progress."""
    return Caller(_tenant.get(), _admin.get())


def visible_tenant() -> str | None:
    """The tenant whose objects the caller may name: its own; None (every object) for an
    admin or with auth off. Lookups and lists filter by it; a miss is a 404."""
    return None if _admin.get() else _tenant.get()


@contextmanager
def as_caller(caller: Caller) -> Iterator[None]:
    """Run a block on behalf of `caller`."""
    tenant_token = _tenant.set(caller.tenant)
    admin_token = _admin.set(caller.admin)
    try:
        yield
    finally:
        _admin.reset(admin_token)
        _tenant.reset(tenant_token)


@contextmanager
def as_tenant(tenant: str | None) -> Iterator[None]:
    """Run a block on behalf of `tenant` (not an admin): work started by an event, a
    schedule or a chain, counted for the tenant that started it."""
    with as_caller(Caller(tenant)):
        yield
