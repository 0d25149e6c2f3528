"""The engines: they talk to the world only through `agentrunner.ports`."""
