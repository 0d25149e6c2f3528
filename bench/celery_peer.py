"""The Celery app of bench/invoke.py's peer: one task that returns its argument, the
same trivial work as the `echo` provider.

bench/invoke.py starts `celery -A bench.celery_peer worker` with BENCH_CELERY_BROKER,
BENCH_CELERY_BACKEND, BENCH_CELERY_QUEUE and BENCH_CELERY_KEY_PREFIX set, and imports this
module in its own process as the client with the same variables. Building the app opens
no connection. bench/peers.py (through bench/peer_apps/celery_app.py) also sets
BENCH_CELERY_DURABLE=1: a task is acknowledged only once it has run (a worker killed
mid-task leaves it queued), messages are persistent and so are results.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "agentrunner-bench-celery")

app = Celery(
    "agentrunner_bench_peer",
    broker=os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("BENCH_CELERY_BACKEND", "redis://127.0.0.1:6379/13"),
)
app.conf.update(
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    # Results live under a prefix of this run, so the bench can delete them afterwards.
    result_backend_transport_options={"global_keyprefix": os.environ.get("BENCH_CELERY_KEY_PREFIX", "")},
    result_expires=600,
    # No broadcast queues or gossip: the bench's queue is all this peer declares.
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)
if os.environ.get("BENCH_CELERY_DURABLE") == "1":
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_delivery_mode="persistent",
        result_persistent=True,
    )


@app.task(name="bench.echo")  # type: ignore[untyped-decorator]  # Celery is not typed (and not always installed)
def echo(task_data: Any) -> Any:
    """The peer's trivial work: answer with the input."""
    return task_data
