"""Every provider is declared once (adapters/providers/catalog.py): each name an agent may
give has its own declaration, what it needs is a documented setting, and an offline
provider never stands in for a vendor. (A `ProviderName` without a declaration fails type
checking: `spec_of` ends in `assert_never`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentrunner.adapters.providers.catalog import PROVIDERS, ProviderSpec, SettingsProviderCatalog
from agentrunner.adapters.providers.offline import EchoProvider
from agentrunner.domain.agent import LLMConfig, ProviderName
from agentrunner.settings import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def test_every_provider_name_has_its_own_declaration() -> None:
    assert {name: spec.name for name, spec in PROVIDERS.items()} == {name: name for name in ProviderName}


@pytest.mark.parametrize("spec", PROVIDERS.values(), ids=lambda spec: spec.name.value)
def test_what_a_provider_needs_is_a_documented_setting_named_in_its_reason(spec: ProviderSpec) -> None:
    documented = ENV_EXAMPLE.read_text()
    for field in spec.needs:
        assert field in Settings.model_fields
        assert f"\n{field.upper()}=" in documented
        assert field.upper() in spec.reason
        assert field.upper() in spec.reason.short


@pytest.mark.parametrize("name", [name for name in ProviderName if PROVIDERS[name].sdk])
async def test_a_vendor_with_its_settings_is_never_answered_by_the_echo_provider(
    name: ProviderName, clean_env: None
) -> None:
    keys: dict[str, Any] = {field: "k" for field in PROVIDERS[name].needs}  # Settings validates them
    catalog = SettingsProviderCatalog(Settings(_env_file=None, **keys))
    try:
        provider = await catalog.provider_for(LLMConfig(provider=name, model="m"))
    finally:
        await catalog.close()

    assert not isinstance(provider, EchoProvider)
    assert type(provider).__module__ == f"agentrunner.adapters.providers.{name.value}"
