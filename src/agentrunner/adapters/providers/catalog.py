"""Picks the provider client for each agent's `llm_config`, from settings.

Clients are created on first use (importing a vendor SDK is slow, and start-up should not
pay for providers nobody calls) and shared per (provider, credentials, endpoint). A vendor's
SDK is imported and its provider made in a worker thread: the import reads files for 0.3 s
(boto3) to 2.3 s (anthropic) on the CI machine, which the event loop must not wait on. The
caller awaits it before its call is counted by a rate limit, which paces what the vendor sees.
"""

from __future__ import annotations

import asyncio

from agentrunner.adapters.providers.offline import EchoProvider, Script, ScriptedProvider
from agentrunner.domain.agent import LLMConfig, ProviderName
from agentrunner.domain.errors import LLMAuthError
from agentrunner.domain.reason import Reason
from agentrunner.ports import LLMProvider
from agentrunner.settings import Settings


class SettingsProviderCatalog:
    """ProviderCatalog driven by `Settings` (keys, base URLs, regions, hosts)."""

    def __init__(self, settings: Settings, *, script: Script | None = None) -> None:
        self._settings = settings
        self._script = script
        self._clients: dict[tuple[str, str], LLMProvider] = {}
        # One creation per key at a time: callers meanwhile wait for it, not make a second.
        self._creating: dict[tuple[str, str], asyncio.Lock] = {}

    def unavailable_reason(self, llm: LLMConfig) -> str | None:
        settings = self._settings
        match llm.provider:
            case ProviderName.OPENAI if settings.openai_api_key is None:
                return Reason(
                    "provider 'openai' needs OPENAI_API_KEY: set it in .env or the environment",
                    short="OPENAI_API_KEY not set",
                )
            case ProviderName.ANTHROPIC if settings.anthropic_api_key is None:
                return Reason(
                    "provider 'anthropic' needs ANTHROPIC_API_KEY: set it in .env or the environment",
                    short="ANTHROPIC_API_KEY not set",
                )
            case ProviderName.BEDROCK if settings.aws_access_key_id is None or settings.aws_secret_access_key is None:
                return Reason(
                    "provider 'bedrock' needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: "
                    "set them in .env or the environment",
                    short="AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY not set",
                )
            case ProviderName.SCRIPTED if self._script is None:
                return Reason(
                    "provider 'scripted' is for tests: it answers only when a script is installed",
                    short="provider 'scripted' is for tests only",
                )
            case _:
                return None

    async def provider_for(self, llm: LLMConfig) -> LLMProvider:
        reason = self.unavailable_reason(llm)
        if reason:
            raise LLMAuthError(reason, provider=llm.provider.value)
        key = (llm.provider.value, self._endpoint(llm))
        client = self._clients.get(key)
        if client is None:
            async with self._creating.setdefault(key, asyncio.Lock()):
                client = self._clients.get(key)
                if client is None:
                    client = self._clients[key] = await self._created(llm)
        return client

    async def _created(self, llm: LLMConfig) -> LLMProvider:
        if llm.provider in (ProviderName.SCRIPTED, ProviderName.ECHO):
            return self._create(llm)  # ours: imported already, made without I/O
        return await asyncio.to_thread(self._create, llm)

    def _endpoint(self, llm: LLMConfig) -> str:
        settings = self._settings
        match llm.provider:
            case ProviderName.OPENAI:
                return settings.openai_base_url or ""
            case ProviderName.ANTHROPIC:
                return settings.anthropic_base_url or ""
            case ProviderName.BEDROCK:
                return f"{llm.region or settings.aws_region}|{settings.bedrock_endpoint_url or ''}"
            case ProviderName.OLLAMA:
                return llm.host or settings.ollama_host
            case _:
                return ""

    def _create(self, llm: LLMConfig) -> LLMProvider:
        # Each vendor SDK is imported only when an agent first calls it: they take a
        # noticeable share of start-up time. Runs in a worker thread for them (`_created`).
        settings = self._settings
        timeout = settings.llm_timeout_seconds
        match llm.provider:
            case ProviderName.OPENAI:
                from agentrunner.adapters.providers.openai import OpenAIProvider  # noqa: PLC0415

                assert settings.openai_api_key is not None  # unavailable_reason checked it
                return OpenAIProvider(
                    api_key=settings.openai_api_key.get_secret_value(),
                    base_url=settings.openai_base_url,
                    timeout=timeout,
                )
            case ProviderName.ANTHROPIC:
                from agentrunner.adapters.providers.anthropic import AnthropicProvider  # noqa: PLC0415

                assert settings.anthropic_api_key is not None
                return AnthropicProvider(
                    api_key=settings.anthropic_api_key.get_secret_value(),
                    base_url=settings.anthropic_base_url,
                    timeout=timeout,
                )
            case ProviderName.BEDROCK:
                from agentrunner.adapters.providers.bedrock import BedrockProvider  # noqa: PLC0415

                assert settings.aws_access_key_id is not None
                assert settings.aws_secret_access_key is not None
                return BedrockProvider(
                    region=llm.region or settings.aws_region,
                    endpoint_url=settings.bedrock_endpoint_url,
                    access_key_id=settings.aws_access_key_id.get_secret_value(),
                    secret_access_key=settings.aws_secret_access_key.get_secret_value(),
                    session_token=settings.aws_session_token.get_secret_value() if settings.aws_session_token else None,
                    timeout=timeout,
                )
            case ProviderName.OLLAMA:
                from agentrunner.adapters.providers.ollama import OllamaProvider  # noqa: PLC0415

                return OllamaProvider(host=llm.host or settings.ollama_host, timeout=timeout)
            case ProviderName.SCRIPTED:
                assert self._script is not None
                return ScriptedProvider(self._script)
            case _:
                return EchoProvider()

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
