"""Picks the provider client for each agent's `llm_config`, from settings.

Clients are created on first use (importing a vendor SDK is slow, and start-up should not
pay for providers nobody calls) and shared per (provider, endpoint).
"""

from __future__ import annotations

from agentrunner.adapters.providers.offline import EchoProvider, Script, ScriptedProvider
from agentrunner.domain.agent import LLMConfig, ProviderName
from agentrunner.domain.errors import LLMAuthError
from agentrunner.ports import LLMProvider
from agentrunner.settings import Settings

# Providers whose adapters are not part of this build yet: agents on them are listed as
# unavailable with this reason instead of failing at run time.
_NOT_YET = "the {provider} adapter is not in this version of agentrunner yet"


class SettingsProviderCatalog:
    """ProviderCatalog driven by `Settings` (keys, base URLs, hosts)."""

    def __init__(self, settings: Settings, *, script: Script | None = None) -> None:
        self._settings = settings
        self._script = script
        self._clients: dict[tuple[str, str], LLMProvider] = {}

    def unavailable_reason(self, llm: LLMConfig) -> str | None:
        settings = self._settings
        match llm.provider:
            case ProviderName.OPENAI:
                if settings.openai_api_key is None:
                    return "provider 'openai' needs OPENAI_API_KEY: set it in .env or the environment"
                return None
            case ProviderName.ANTHROPIC:
                if settings.anthropic_api_key is None:
                    return "provider 'anthropic' needs ANTHROPIC_API_KEY: set it in .env or the environment"
                return _NOT_YET.format(provider="anthropic")
            case ProviderName.BEDROCK:
                if settings.aws_access_key_id is None or settings.aws_secret_access_key is None:
                    return (
                        "provider 'bedrock' needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: "
                        "set them in .env or the environment"
                    )
                return _NOT_YET.format(provider="bedrock")
            case ProviderName.OLLAMA:
                return _NOT_YET.format(provider="ollama")
            case ProviderName.SCRIPTED:
                if self._script is None:
                    return "provider 'scripted' is for tests: it answers only when a script is installed"
                return None
            case ProviderName.ECHO:
                return None

    def provider_for(self, llm: LLMConfig) -> LLMProvider:
        reason = self.unavailable_reason(llm)
        if reason:
            raise LLMAuthError(reason, provider=llm.provider.value)
        key = (llm.provider.value, self._endpoint(llm))
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self._create(llm)
        return client

    def _endpoint(self, llm: LLMConfig) -> str:
        if llm.provider is ProviderName.OPENAI:
            return self._settings.openai_base_url or ""
        return llm.host or llm.region or ""

    def _create(self, llm: LLMConfig) -> LLMProvider:
        if llm.provider is ProviderName.OPENAI:
            # Imported here: the SDK takes a noticeable share of start-up time.
            from agentrunner.adapters.providers.openai import OpenAIProvider  # noqa: PLC0415

            api_key = self._settings.openai_api_key
            assert api_key is not None  # unavailable_reason checked it
            return OpenAIProvider(
                api_key=api_key.get_secret_value(),
                base_url=self._settings.openai_base_url,
                timeout=self._settings.llm_timeout_seconds,
            )
        if llm.provider is ProviderName.SCRIPTED:
            assert self._script is not None
            return ScriptedProvider(self._script)
        return EchoProvider()

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
