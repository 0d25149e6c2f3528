"""What users need to test their own agents without a vendor or a broker: the in-memory
bus, the offline providers, and a node whose `scripted` agents answer from a script.

    node = Node(settings, script=["first reply", "second reply"])
    async with node.running():
        execution = await node.orchestrator.invoke("my-agent", {"prompt": "hi"}, wait=5)
"""

from __future__ import annotations

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.cache.memory import InMemoryCache
from agentrunner.adapters.providers.offline import EchoProvider, Script, ScriptedProvider

__all__ = ["EchoProvider", "InMemoryCache", "InMemoryEventBus", "Script", "ScriptedProvider"]
