"""Open sockets whose credential is gone are closed, even when no process said so.

A logout, a revoked bot token, a deleted bot or a deactivated account closes the
sockets opened with it on every process: here at once, elsewhere through the control
channel (`CloseCredential`, `CloseUser`). Redis pub/sub is at-most-once: a process
whose subscriber was reconnecting at that moment, or a publish that failed, would
leave such a socket open for as long as it lasts. So every AUDIT_SECONDS each process
asks MongoDB which of its open sockets' sessions and tokens still stand (one query per
CHUNK credentials, and one for their accounts) and closes the others with 1008, as the
revocation would have. A session that expired while its socket stayed open goes too.
"""

from __future__ import annotations

import asyncio
import logging

from server import tasks
from server.rooms import LocalRooms, Member
from server.store import Store, StoreError

log = logging.getLogger(__name__)

AUDIT_SECONDS = 30.0
CHUNK = 1000


class CredentialAudit:
    """Closes this process's sockets whose session or token is gone; see above."""

    def __init__(self, rooms: LocalRooms, store: Store, interval: float = AUDIT_SECONDS
                 ) -> None:
        self.rooms = rooms
        self.store = store
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="credential-audit")

    async def close(self) -> None:
        await tasks.stop(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                closed = await self.run()
            except StoreError as e:
                log.warning("credential audit skipped: %s", e)
                continue
            except Exception:  # a bug here must not end the audit for good
                log.exception("credential audit crashed")
                continue
            if closed:
                log.warning("closed %d socket(s) whose credential had been revoked without "
                            "word reaching this process", closed)

    async def run(self) -> int:
        """Close the open sockets whose session or token is gone; returns how many.
        Raises StoreError."""
        sessions: dict[str, list[Member]] = {}
        tokens: dict[str, list[Member]] = {}
        for conn in list(self.rooms.connections):
            if conn.session_id is not None:
                sessions.setdefault(conn.session_id, []).append(conn)
            elif conn.credential is not None:
                tokens.setdefault(conn.credential, []).append(conn)
        live: set[str] = set()
        names = list(sessions)
        for start in range(0, len(names), CHUNK):
            live.update(await self.store.session_users(names[start:start + CHUNK]))
        digests = list(tokens)
        for start in range(0, len(digests), CHUNK):
            live.update(await self.store.live_tokens(digests[start:start + CHUNK]))
        gone = [conn for held in (sessions, tokens) for key, conns in held.items()
                if key not in live for conn in conns]
        for conn in gone:
            conn.shut(1008, "credential revoked")
        return len(gone)
