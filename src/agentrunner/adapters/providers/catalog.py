"""Picks the provider client for each agent's `llm_config`, from settings.

Every provider is declared once, in `spec_of`: the settings it cannot run without (and the
reason an agent shows while one is unset), the endpoint its clients are shared by, and the
factory that makes one. A new vendor is its module plus one entry there; `spec_of` matches
every `ProviderName` exhaustively, so a name added without an entry fails type checking
(`assert_never`) instead of answering as another provider.

Clients are created on first use (importing a vendor SDK is slow, and start-up should not
pay for providers nobody calls) and shared per (provider, credentials, endpoint). A vendor's
SDK is imported and its provider made in a worker thread: the import reads files for 0.3 s
(boto3) to 2.3 s (anthropic) on the CI machine, which the event loop must not wait on. The
caller awaits it before its call is counted by a rate limit, which paces what the vendor sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import assert_never

from pydantic import SecretStr

from agentrunner.adapters.providers.offline import EchoProvider, Script, ScriptedProvider
from agentrunner.domain.agent import LLMConfig, ProviderName
from agentrunner.domain.errors import LLMAuthError
from agentrunner.domain.reason import Reason
from agentrunner.ports.providers import LLMProvider
from agentrunner.settings import Settings

# Makes a provider client: (settings, the agent's llm_config, the installed test script).
Factory = Callable[[Settings, LLMConfig, Script | None], LLMProvider]


def _no_endpoint(settings: Settings, llm: LLMConfig) -> str:
    return ""


@dataclass(frozen=True, kw_only=True, slots=True)
class ProviderSpec:
    """One provider's declaration. `needs`: the `Settings` fields it cannot run without
    (their variables are the names upper-cased); `missing`: the reason shown while one is
    unset, or while no script is installed for `needs_script` (derived from `needs` when
    not given); `endpoint`: what its clients are shared by besides it; `sdk`: a vendor SDK,
    imported and made in a worker thread (ours are made on the loop, without I/O)."""

    name: ProviderName
    make: Factory
    needs: tuple[str, ...] = ()
    needs_script: bool = False
    missing: Reason | None = None
    endpoint: Callable[[Settings, LLMConfig], str] = _no_endpoint
    sdk: bool = True

    @property
    def reason(self) -> Reason:
        """Why an agent on this provider cannot run while what it needs is missing."""
        if self.missing is not None:
            return self.missing
        names = [field.upper() for field in self.needs]
        return Reason(
            f"provider '{self.name.value}' needs {' and '.join(names)}: "
            f"set {'it' if len(names) == 1 else 'them'} in .env or the environment",
            short=f"{' / '.join(names)} not set",
        )


def spec_of(provider: ProviderName) -> ProviderSpec:
    """The declaration of `provider` (see the module docstring)."""
    match provider:
        case ProviderName.OPENAI:
            return ProviderSpec(
                name=provider,
                needs=("openai_api_key",),
                endpoint=lambda settings, llm: settings.openai_base_url or "",
                make=_openai,
            )
        case ProviderName.ANTHROPIC:
            return ProviderSpec(
                name=provider,
                needs=("anthropic_api_key",),
                endpoint=lambda settings, llm: settings.anthropic_base_url or "",
                make=_anthropic,
            )
        case ProviderName.BEDROCK:
            return ProviderSpec(
                name=provider,
                needs=("aws_access_key_id", "aws_secret_access_key"),
                endpoint=lambda settings, llm: (
                    f"{llm.region or settings.aws_region}|{settings.bedrock_endpoint_url or ''}"
                ),
                make=_bedrock,
            )
        case ProviderName.OLLAMA:
            return ProviderSpec(
                name=provider, endpoint=lambda settings, llm: llm.host or settings.ollama_host, make=_ollama
            )
        case ProviderName.ECHO:
            return ProviderSpec(name=provider, make=lambda settings, llm, script: EchoProvider(), sdk=False)
        case ProviderName.SCRIPTED:
            return ProviderSpec(
                name=provider,
                needs_script=True,
                missing=Reason(
                    "provider 'scripted' is for tests: it answers only when a script is installed",
                    short="provider 'scripted' is for tests only",
                ),
                make=_scripted,
                sdk=False,
            )
        case _:
            assert_never(provider)


# The factories. Each vendor SDK is imported only when an agent first calls it: they take a
# noticeable share of start-up time. They run in a worker thread (`ProviderSpec.sdk`).


def _openai(settings: Settings, llm: LLMConfig, script: Script | None) -> LLMProvider:
    from agentrunner.adapters.providers.openai import OpenAIProvider  # noqa: PLC0415

    return OpenAIProvider(
        api_key=_secret(settings.openai_api_key),
        base_url=settings.openai_base_url,
        timeout=settings.llm_timeout_seconds,
    )


def _anthropic(settings: Settings, llm: LLMConfig, script: Script | None) -> LLMProvider:
    from agentrunner.adapters.providers.anthropic import AnthropicProvider  # noqa: PLC0415

    return AnthropicProvider(
        api_key=_secret(settings.anthropic_api_key),
        base_url=settings.anthropic_base_url,
        timeout=settings.llm_timeout_seconds,
    )


def _bedrock(settings: Settings, llm: LLMConfig, script: Script | None) -> LLMProvider:
    from agentrunner.adapters.providers.bedrock import BedrockProvider  # noqa: PLC0415

    return BedrockProvider(
        region=llm.region or settings.aws_region,
        endpoint_url=settings.bedrock_endpoint_url,
        access_key_id=_secret(settings.aws_access_key_id),
        secret_access_key=_secret(settings.aws_secret_access_key),
        session_token=settings.aws_session_token.get_secret_value() if settings.aws_session_token else None,
        timeout=settings.llm_timeout_seconds,
    )


def _ollama(settings: Settings, llm: LLMConfig, script: Script | None) -> LLMProvider:
    from agentrunner.adapters.providers.ollama import OllamaProvider  # noqa: PLC0415

    return OllamaProvider(host=llm.host or settings.ollama_host, timeout=settings.llm_timeout_seconds)


def _scripted(settings: Settings, llm: LLMConfig, script: Script | None) -> LLMProvider:
    assert script is not None  # unavailable_reason checked it
    return ScriptedProvider(script)


def _secret(value: SecretStr | None) -> str:
    assert value is not None  # unavailable_reason checked it
    return value.get_secret_value()


# Every provider's declaration, made once (after the factories it names).
PROVIDERS: dict[ProviderName, ProviderSpec] = {name: spec_of(name) for name in ProviderName}


class SettingsProviderCatalog:
    """ProviderCatalog driven by `Settings` (keys, base URLs, regions, hosts)."""

    def __init__(self, settings: Settings, *, script: Script | None = None) -> None:
        self._settings = settings
        self._script = script
        self._clients: dict[tuple[str, str], LLMProvider] = {}
        # One creation per key at a time: callers meanwhile wait for it, not make a second.
        self._creating: dict[tuple[str, str], asyncio.Lock] = {}

    def unavailable_reason(self, llm: LLMConfig) -> str | None:
        spec = PROVIDERS[llm.provider]
        unset = any(getattr(self._settings, field) is None for field in spec.needs)
        return spec.reason if unset or (spec.needs_script and self._script is None) else None

    async def provider_for(self, llm: LLMConfig) -> LLMProvider:
        reason = self.unavailable_reason(llm)
        if reason:
            raise LLMAuthError(reason, provider=llm.provider.value)
        spec = PROVIDERS[llm.provider]
        key = (llm.provider.value, spec.endpoint(self._settings, llm))
        client = self._clients.get(key)
        if client is None:
            async with self._creating.setdefault(key, asyncio.Lock()):
                client = self._clients.get(key)
                if client is None:
                    client = self._clients[key] = await self._created(spec, llm)
        return client

    async def _created(self, spec: ProviderSpec, llm: LLMConfig) -> LLMProvider:
        if not spec.sdk:
            return spec.make(self._settings, llm, self._script)
        return await asyncio.to_thread(spec.make, self._settings, llm, self._script)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
