"""agentrunner."""
