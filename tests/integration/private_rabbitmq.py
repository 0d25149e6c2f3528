"""A RabbitMQ of a test's own (scripts/private_services.sh, on free ports), that the test may
stop, kill, start again and reconfigure with rabbitmqctl: the shared broker on 5672 is never
touched, so such a test runs beside the rest of the suite."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class PrivateRabbitMQ:
    """One private broker, in a directory of its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = ""

    async def _script(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "bash",
            str(REPO / "scripts" / "private_services.sh"),
            args[0],
            str(self.directory),
            *args[1:],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 180)
        assert process.returncode == 0, f"private_services.sh {' '.join(args)}: {output.decode()}"
        return output.decode()

    async def start(self) -> None:
        """Start it (on the same port every time) and wait until it takes connections."""
        await self._script("start", "rabbitmq")
        urls = dict(line.split("=", 1) for line in (await self._script("urls")).splitlines() if "=" in line)
        self.url = urls["RABBITMQ_URL"]

    async def answers(self) -> bool:
        """Whether it takes connections now (False before its first start and once stopped)."""
        if not self.url:
            return False
        port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError):
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async def stop(self, how: str = "graceful") -> None:
        """Stop it: `graceful` (rabbitmqctl stop) or `kill` (kill -9)."""
        await self._script("stop", "rabbitmq", how)

    async def ctl(self, *args: str) -> None:
        """rabbitmqctl `args` on this broker (close_all_connections, stop_app, ...)."""
        await self._script("ctl", *args)

    async def down(self) -> None:
        await self._script("down")


@asynccontextmanager
async def private_rabbitmq() -> AsyncIterator[PrivateRabbitMQ]:
    """A started private broker, killed and its data deleted afterwards."""
    broker = PrivateRabbitMQ(Path(tempfile.mkdtemp(prefix="agentrunner-rabbitmq-")))
    try:
        await broker.start()
        yield broker
    finally:
        await broker.down()
        shutil.rmtree(broker.directory, ignore_errors=True)
