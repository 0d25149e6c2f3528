"""Every adapter that names its server in logs and errors (the database, the broker, the
cache) masks its URL with the one function of `domain/redaction.py`: there were three
ways (SQLAlchemy's, yarl's and a hand-made one), and each hid a different part."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus
from agentrunner.adapters.cache.redis import RedisCache
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.redaction import MASK, mask_url

SECRET = "hunter2"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+asyncpg://agentrunner:hunter2@db:5432/runs",
            f"postgresql+asyncpg://agentrunner:{MASK}@db:5432/runs",
        ),
        ("amqp://guest:hunter2@broker:5672/", f"amqp://guest:{MASK}@broker:5672/"),
        ("redis://:hunter2@cache:6379/0", f"redis://{MASK}@cache:6379/0"),
        ("redis://[::1]:6379/0?password=hunter2", f"redis://[::1]:6379/0?password={MASK}"),
        ("unix:///run/redis.sock?db=0&password=hunter2", f"unix:///run/redis.sock?db=0&password={MASK}"),
        ("redis://hunter2@cache:6379/0", f"redis://{MASK}@cache:6379/0"),  # a user part alone may be a token
    ],
)
def test_a_server_url_keeps_where_it_points_and_loses_its_credentials(url: str, expected: str) -> None:
    assert mask_url(url) == expected


DATABASE = "postgresql+asyncpg://agentrunner:hunter2@db:5432/runs"
BROKER = "amqp://guest:hunter2@broker:5672/"
CACHE = "redis://:hunter2@cache:6379/0?password=hunter2"


@pytest.mark.parametrize(
    ("url", "where"),
    [
        (DATABASE, lambda: SQLStateStore(DATABASE)._where),
        (BROKER, lambda: RabbitMQEventBus(BROKER)._where),
        (CACHE, lambda: RedisCache(CACHE)._where),
    ],
    ids=["database", "broker", "cache"],
)
def test_every_adapter_names_its_server_through_mask_url(url: str, where: Callable[[], str]) -> None:
    assert where() == mask_url(url)
    assert SECRET not in where()
