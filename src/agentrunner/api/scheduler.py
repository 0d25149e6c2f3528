"""Scheduler role (8004): schedules, their fires, pause/resume and trigger now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError

from agentrunner.api.edge import EdgeConfig, role_app
from agentrunner.api.limits import InputLimits, check_task_size
from agentrunner.domain.errors import ConfigError
from agentrunner.domain.event import new_id
from agentrunner.domain.schedule import MisfirePolicy, OverlapPolicy, Schedule, ScheduleFire
from agentrunner.runtime.scheduler import Scheduler

SCHEDULES_PAGE = 100
NEXT_CURSOR_HEADER = "X-Next-Cursor"


class ScheduleRequest(BaseModel):
    """Body of `POST /schedules`: an agent, and either `cron` or `interval_seconds`."""

    agent: str = Field(description="The agent to run.")
    id: str | None = Field(default=None, max_length=64, description="Defaults to a new id.")
    type: Literal["cron", "interval"] | None = Field(default=None, description="Optional, as in schedule_config.")
    cron: str | None = Field(default=None, description='5 fields, e.g. "0 9 * * 1-5".')
    interval_seconds: float | None = Field(default=None, gt=0)
    timezone: str = Field(default="UTC", description="IANA name the cron expression is read in.")
    start_at: datetime | None = Field(default=None, description="First tick of an interval schedule.")
    jitter_seconds: float = Field(default=0, ge=0, description="Random delay per tick, below the interval.")
    task_data: dict[str, Any] = Field(default_factory=dict)
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    misfire_grace_seconds: float = Field(default=60, gt=0)
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    timeout_seconds: float = Field(default=300, gt=0)
    paused: bool = False


class ScheduleView(BaseModel):
    """A schedule with its next fire time, in UTC and in its own timezone."""

    schedule: Schedule
    next_fire_at: datetime | None
    next_fire_at_local: datetime | None


class FireList(BaseModel):
    """Fires of a schedule, newest first; pass `next_before` as `before` for older ones."""

    items: list[ScheduleFire]
    next_before: datetime | None


def _view(scheduler: Scheduler, schedule: Schedule) -> ScheduleView:
    upcoming = scheduler.next_fire(schedule)
    local = upcoming.astimezone(ZoneInfo(schedule.timezone)) if upcoming else None
    return ScheduleView(schedule=schedule, next_fire_at=upcoming, next_fire_at_local=local)


def _schedule_from(request: ScheduleRequest) -> Schedule:
    fields = request.model_dump(exclude={"type", "id"})
    if request.type == "cron":
        fields["interval_seconds"] = None
    elif request.type == "interval":
        fields["cron"] = None
    try:
        return Schedule(id=request.id or new_id(), **fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid schedule: {problems}") from exc


def schedule_read_routes(scheduler: Scheduler) -> APIRouter:
    """Reading schedules with their next fire, from the state store every role shares: the
    scheduler serves them, and so does the orchestrator, for the dashboard on its port.
    A tenant sees the schedules it made; an admin every one, agent files' included."""
    router = APIRouter(tags=["schedules"])

    @router.get(
        "/schedules",
        response_model=list[ScheduleView],
        description=f"A page of schedules by id ({SCHEDULES_PAGE} unless `limit` says otherwise). When more "
        f"follow, the `{NEXT_CURSOR_HEADER}` header holds the `cursor` of the next page, and `Link` its URL "
        "(rel=next).",
    )
    async def list_schedules(
        request: Request,
        response: Response,
        agent: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = SCHEDULES_PAGE,
        cursor: Annotated[str | None, Query(max_length=64, description="The id after which the page starts.")] = None,
    ) -> list[ScheduleView]:
        schedules = sorted(await scheduler.schedules(agent=agent), key=lambda schedule: schedule.id)
        if cursor is not None:
            schedules = [schedule for schedule in schedules if schedule.id > cursor]
        page = schedules[:limit]
        if len(schedules) > limit:  # the answer stays a bare list: the next page is in the headers
            following = page[-1].id
            query = urlencode({**request.query_params, "cursor": following})
            response.headers[NEXT_CURSOR_HEADER] = following
            response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
        return [_view(scheduler, schedule) for schedule in page]

    @router.get("/schedules/{schedule_id}", response_model=ScheduleView)
    async def get_schedule(schedule_id: str) -> ScheduleView:
        return _view(scheduler, await scheduler.get(schedule_id))

    return router


def scheduler_app(scheduler: Scheduler, edge: EdgeConfig, limits: InputLimits | None = None) -> FastAPI:
    """The scheduler's HTTP API (ARCHITECTURE §9); a schedule's task_data is bounded by `limits`."""
    max_task_bytes = (limits or InputLimits()).max_task_bytes
    app = role_app("scheduler", "agentrunner scheduler", edge)
    app.include_router(schedule_read_routes(scheduler))

    @app.post("/schedules", response_model=ScheduleView, status_code=201, tags=["schedules"])
    async def create_schedule(request: ScheduleRequest) -> ScheduleView:
        check_task_size(request.task_data, max_task_bytes)
        return _view(scheduler, await scheduler.create(_schedule_from(request)))

    @app.delete("/schedules/{schedule_id}", status_code=204, tags=["schedules"])
    async def delete_schedule(schedule_id: str) -> None:
        await scheduler.delete(schedule_id)

    @app.post("/schedules/{schedule_id}/pause", response_model=ScheduleView, tags=["schedules"])
    async def pause_schedule(schedule_id: str) -> ScheduleView:
        return _view(scheduler, await scheduler.set_paused(schedule_id, True))

    @app.post("/schedules/{schedule_id}/resume", response_model=ScheduleView, tags=["schedules"])
    async def resume_schedule(schedule_id: str) -> ScheduleView:
        return _view(scheduler, await scheduler.set_paused(schedule_id, False))

    @app.post(
        "/schedules/{schedule_id}/trigger",
        response_model=ScheduleFire,
        status_code=202,
        tags=["schedules"],
        summary="Run the schedule's agent now (GET /executions/{execution_id} for the result)",
    )
    async def trigger_schedule(schedule_id: str) -> ScheduleFire:
        return await scheduler.trigger(schedule_id)

    @app.get("/schedules/{schedule_id}/fires", response_model=FireList, tags=["schedules"])
    async def list_fires(
        schedule_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 50, before: datetime | None = None
    ) -> FireList:
        if before is not None and before.tzinfo is None:
            before = before.replace(tzinfo=UTC)  # a time without offset is read as UTC
        fires = await scheduler.fires(schedule_id, limit=limit, before=before)
        return FireList(items=fires, next_before=fires[-1].fire_time if len(fires) == limit else None)

    return app
