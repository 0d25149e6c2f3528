"""Scheduler role (8004)."""

from __future__ import annotations

from fastapi import FastAPI

from agentrunner.api.edge import EdgeConfig, role_app


def scheduler_app(edge: EdgeConfig) -> FastAPI:
    """The scheduler's HTTP API: health for now; schedules arrive with the scheduler engine."""
    return role_app("scheduler", "agentrunner scheduler", edge)
