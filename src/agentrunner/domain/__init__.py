"""Pure models and rules of agentrunner: no I/O, no imports from other layers."""
