"""Tool adapters: built-in tools, installed tools (entry points) and MCP servers."""
