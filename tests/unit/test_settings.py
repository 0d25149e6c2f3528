"""Settings: documented in .env.example, loadable from it with no key, secrets masked."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from agentrunner.settings import Settings
from tests.conftest import REPO

# Variables of .env.example that docker-compose.yml reads and the platform does not.
COMPOSE_ONLY = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "RABBITMQ_PASSWORD", "BIND_ADDRESS"}


def _documented_names() -> set[str]:
    text = (REPO / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    fields = {name.upper() for name in Settings.model_fields}

    assert fields - _documented_names() == set(), "settings missing from .env.example"
    assert {n for n in _documented_names() if n not in fields} == COMPOSE_ONLY, ".env.example names unknown settings"


def test_the_compose_only_variables_are_used_by_docker_compose() -> None:
    compose = (REPO / "docker-compose.yml").read_text()

    assert {name for name in COMPOSE_ONLY if f"${{{name}:" in compose} == COMPOSE_ONLY


def test_env_example_copied_to_env_loads_with_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    shutil.copy(REPO / ".env.example", tmp_path / ".env")
    monkeypatch.chdir(tmp_path)

    settings = Settings()

    assert settings.openai_api_key is None
    assert not settings.database_url
    assert settings.effective_database_url == "sqlite+aiosqlite:///data/agentrunner.db"
    assert (settings.state_port, settings.slack_port) == (8001, 8005)


def test_seed_names_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POOL_SIZE", "50")
    monkeypatch.setenv("DB_MAX_OVERFLOW", "20")
    monkeypatch.setenv("RABBITMQ_PREFETCH_COUNT", "5")
    monkeypatch.setenv("ENABLE_API_AUTH", "true")

    settings = Settings(_env_file=None)

    assert (settings.db_pool_size, settings.db_max_overflow, settings.rabbitmq_prefetch_count) == (50, 20, 5)
    assert settings.enable_api_auth is True


def test_secrets_never_show_in_repr_or_dump() -> None:
    settings = Settings(_env_file=None, openai_api_key="sk-very-secret", slack_bot_token="xoxb-secret")

    assert "sk-very-secret" not in repr(settings)
    assert "xoxb-secret" not in str(settings.model_dump())
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-very-secret"


def test_the_api_rate_limit_defaults_on_only_with_auth_and_zero_still_turns_it_off() -> None:
    def limit(**values: Any) -> int:  # Any: Settings validates each value
        return Settings(_env_file=None, **values).effective_api_rate_limit

    assert limit() == 0
    assert limit(enable_api_auth=True) == 600
    assert limit(enable_api_auth=True, api_rate_limit_per_minute=0) == 0
    assert limit(enable_api_auth=True, api_rate_limit_per_minute=30) == 30


def test_allowed_hosts_and_auth_keys_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", "Agents.Example.com, localhost,")
    monkeypatch.setenv("ADMIN_API_KEYS", "ops:admin-key-0123456789abcdef0123456789ab")
    monkeypatch.setenv("TENANT_ID_SECRET", "tenant-secret")

    settings = Settings(_env_file=None)

    assert settings.allowed_hosts == ("agents.example.com", "localhost")
    assert "admin-key" not in repr(settings)
    assert "tenant-secret" not in repr(settings)


def test_service_urls_show_where_they_point_but_never_their_password() -> None:
    settings = Settings(
        _env_file=None,
        database_url="postgresql+asyncpg://agentrunner:pg-secret@db:5432/agentrunner",
        redis_url="redis://:redis-secret@cache:6379/0",
        rabbitmq_url="amqp://agentrunner:mq-secret@broker:5672/",
        otel_exporter_otlp_endpoint="https://collector:4318/?api_key=otel-secret",
    )
    shown = repr(settings) + str(settings) + str(settings.model_dump()) + settings.model_dump_json()

    assert [word for word in ("pg-secret", "redis-secret", "mq-secret", "otel-secret") if word in shown] == []
    assert "SecretUrl('postgresql+asyncpg://agentrunner:********@db:5432/agentrunner')" in repr(settings)
    assert settings.effective_database_url == "postgresql+asyncpg://agentrunner:pg-secret@db:5432/agentrunner"
    assert settings.redis_url.get_secret_value() == "redis://:redis-secret@cache:6379/0"
