"""Tool adapters (built-in tools and MCP clients) for the agent loop: planned, see the
issues. Agents may already declare `tools:`; they are validated and listed, not yet called."""
