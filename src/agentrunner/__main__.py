"""`python -m agentrunner` runs the CLI."""

from agentrunner.cli import main

main()
