"""Scheduler role (8004)."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI

from agentrunner.api.edge import ReadinessCheck, role_app


def scheduler_app(readiness: Mapping[str, ReadinessCheck]) -> FastAPI:
    """The scheduler's HTTP API: health for now; schedules arrive with the scheduler engine."""
    return role_app("scheduler", "agentrunner scheduler", readiness)
