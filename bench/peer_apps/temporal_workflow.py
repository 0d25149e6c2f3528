"""The workflow and activity of the Temporal peer of bench/peers.py, in a module of their
own: Temporal's sandbox re-imports the workflow's module, which must import nothing else."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import activity, workflow


@activity.defn(name="echo")  # type: ignore[untyped-decorator]  # temporalio lives in the peer's venv
async def echo_activity(task_data: Any) -> Any:
    return task_data


@workflow.defn(name="Echo")
class EchoWorkflow:
    @workflow.run  # type: ignore[untyped-decorator]
    async def run(self, task_data: Any) -> Any:
        return await workflow.execute_activity(echo_activity, task_data, start_to_close_timeout=timedelta(seconds=30))
