"""Slack gateway role (8005)."""

from __future__ import annotations

from fastapi import FastAPI

from agentrunner.api.edge import EdgeConfig, role_app


def slack_app(edge: EdgeConfig) -> FastAPI:
    """The Slack gateway's HTTP API: health for now; commands and events arrive with the gateway."""
    return role_app("slack", "agentrunner slack gateway", edge)
