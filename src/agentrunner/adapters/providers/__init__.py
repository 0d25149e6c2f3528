"""LLMProvider adapters, one module per vendor, and the catalog that picks one per agent."""
