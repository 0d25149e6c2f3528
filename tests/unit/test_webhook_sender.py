"""The webhook sender's failures read as a coarse reason (the driver's message names
addresses and internals) and keep the driver's exception as their cause, for tracebacks."""

from __future__ import annotations

import httpx
import pytest

from agentrunner.adapters.egress import EgressGuard
from agentrunner.adapters.webhooks import HttpxWebhookSender
from agentrunner.domain.egress import UNREACHABLE, EgressPolicy, parse_networks
from agentrunner.domain.errors import DependencyUnavailableError
from tests.ports import free_port

# Nothing listens on this loopback port: the operator's exception lets the guard call it.
LOOPBACK_ALLOWED = EgressGuard(EgressPolicy(allowed_networks=parse_networks("127.0.0.0/8"), allow_http_webhooks=True))


async def test_an_unreachable_receiver_raises_a_coarse_reason_with_the_driver_error_as_cause() -> None:
    sender = HttpxWebhookSender(LOOPBACK_ALLOWED)
    try:
        with pytest.raises(DependencyUnavailableError) as raised:
            await sender.post(f"http://127.0.0.1:{free_port()}/hook", b"{}", {}, timeout_seconds=5.0)
    finally:
        await sender.close()
    assert raised.value.message == UNREACHABLE
    assert isinstance(raised.value.__cause__, httpx.ConnectError)
