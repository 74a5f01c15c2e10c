"""Real `python run.py` server processes for tests that need whole processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.client import Client
from tests.conftest import STATUS_TOKEN

ROOT = Path(__file__).resolve().parent.parent


def start_server(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "run.py", *args], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)


async def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    client = Client(url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        assert proc.poll() is None, "server exited during start-up"
        try:
            if (await client.request("GET", "/readyz"))[0] == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)  # polling a starting process: there is no event to await
    raise TimeoutError(url)


def shared_env(services, config) -> dict[str, str]:
    return {**os.environ, "MONGO_URL": services.mongo_url, "REDIS_URL": services.redis_url,
            "COOKIE_SECRET": "shutdown-test-secret-0123456789", "CHAT_DB": config.db_name,
            "CHAT_REDIS_PREFIX": config.redis_prefix, "STATUS_TOKEN": STATUS_TOKEN}
