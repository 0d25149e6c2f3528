"""The `agentrunner` command: start the platform, check agent files, talk to a running node.

One module per kind of command (`local`: run and check on this machine; `remote`: talk to a
running node's API; `evals`: run eval suites on one) on one Typer app (`common`)."""

from agentrunner.cli.collector import collector_paused

with collector_paused():  # 20% of the imports' CPU otherwise (the heap only grows meanwhile)
    from agentrunner.cli import evals, local, remote  # noqa: F401 - importing them registers their commands
    from agentrunner.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
