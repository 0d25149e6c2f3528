"""The `agentrunner` command: start the platform, check agent files, talk to a running node.

One module per kind of command (`local`: run and check on this machine; `remote`: talk to a
running node's API; `evals`: run eval suites on one) on one Typer app (`common`)."""

import gc

# The collector off while the commands are imported: 20% of the imports' CPU otherwise (the
# heap only grows meanwhile); `common.collector_paused` does the same for a server's start.
_collecting = gc.isenabled()
gc.disable()
try:
    from agentrunner.cli import evals, local, remote  # noqa: F401 - importing them registers their commands
    from agentrunner.cli.common import app
finally:
    if _collecting:
        gc.enable()

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
