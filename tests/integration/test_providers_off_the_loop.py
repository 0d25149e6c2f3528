"""The first call of an agent on a vendor imports that vendor's SDK (0.3 s for boto3 to 2.3 s
for anthropic) and builds its client: none of it on the event loop.

In a fresh interpreter, since this test process imported every SDK at collection: the
catalog is asked for each vendor's provider on a loop under the blocking-call guard."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

VENDORS = {"openai": "openai", "anthropic": "anthropic", "bedrock": "boto3", "ollama": "ollama"}

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from tests.blocking import no_blocking_calls
    from agentrunner.adapters.providers.catalog import SettingsProviderCatalog
    from agentrunner.domain.agent import LLMConfig
    from agentrunner.settings import Settings

    VENDORS = {vendors!r}

    async def main() -> None:
        catalog = SettingsProviderCatalog(Settings(
            _env_file=None, openai_api_key="k" * 40, anthropic_api_key="k" * 40,
            aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="s" * 40,
        ))
        for vendor, module in VENDORS.items():
            before = module in sys.modules
            await catalog.provider_for(LLMConfig(provider=vendor, model="m"))
            print(vendor, "imported before" if before else "imported now" if module in sys.modules else "not imported")
        await catalog.close()

    with no_blocking_calls():
        asyncio.run(main())
    """
)


def test_the_catalog_imports_and_builds_each_vendors_sdk_off_the_loop() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(vendors=VENDORS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]  # a BlockingError names the call
    assert done.stdout.split("\n")[:-1] == [f"{vendor} imported now" for vendor in VENDORS], done.stdout
