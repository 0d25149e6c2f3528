"""Slack gateway role (8005)."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI

from agentrunner.api.edge import ReadinessCheck, role_app


def slack_app(readiness: Mapping[str, ReadinessCheck]) -> FastAPI:
    """The Slack gateway's HTTP API: health for now; commands and events arrive with the gateway."""
    return role_app("slack", "agentrunner slack gateway", readiness)
