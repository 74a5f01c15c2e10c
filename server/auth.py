"""Accounts and sessions: validation, bcrypt in an executor, server-side sessions."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import bcrypt

from server.metrics import Metrics
from server.model import User
from server.store import Conflict, QuotaExceeded, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 72  # bcrypt's limit: longer input is an error, never truncated


class AuthError(Exception):
    """An authentication request failed; `code` is the documented error code."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


BUSY = "unavailable"  # the code of the AuthError raised when the bcrypt queue is full


class QuotaError(AuthError):
    """Creating one more would exceed the owner's quota of `limit`."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__("quota_exceeded", message)
        self.limit = limit


LOGIN_FAILED = "invalid username or password"


def validate_username(name: object) -> str:
    if not isinstance(name, str) or not USERNAME_RE.fullmatch(name):
        raise AuthError(
            "bad_request",
            "username must be 3 to 32 characters: letters, digits, '_', '.' or '-'",
        )
    return name


def validate_password(password: object) -> bytes:
    if not isinstance(password, str):
        raise AuthError("bad_request", "password must be a string")
    try:
        raw = password.encode("utf-8")
    except UnicodeEncodeError:
        raise AuthError("bad_request", "password must be valid UTF-8") from None
    if len(raw) < PASSWORD_MIN_BYTES:
        raise AuthError("bad_request", f"password must be at least {PASSWORD_MIN_BYTES} bytes")
    if len(raw) > PASSWORD_MAX_BYTES:
        raise AuthError("bad_request", f"password must be at most {PASSWORD_MAX_BYTES} bytes"
                        " of UTF-8")
    return raw


class Auth:
    """Registers users, checks passwords and owns the server-side session lifecycle."""

    def __init__(self, store: Store, *, executor: Executor | None = None, rounds: int = 12,
                 session_ttl: dt.timedelta = dt.timedelta(days=30), threads: int = 4,
                 max_hashing: int = 32, metrics: Metrics | None = None) -> None:
        self.store = store
        self.rounds = rounds
        self.session_ttl = session_ttl
        self.session_days = max(1, session_ttl.days)
        self.hashes = HashQueue(executor, threads, max_hashing, metrics)
        # Checked when the user does not exist, so both failures cost one bcrypt.
        self._dummy_hash = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(rounds))

    async def _hash(self, place: Place, raw: bytes) -> bytes:
        return await place.run("hash", bcrypt.hashpw, raw, bcrypt.gensalt(self.rounds))

    async def _check(self, place: Place, raw: bytes, hashed: bytes) -> bool:
        return await place.run("check", _checkpw, raw, hashed)

    async def register(self, name: object, password: object) -> User:
        username = validate_username(name)
        raw = validate_password(password)
        async with self.hashes.place() as place:
            hashed = await self._hash(place, raw)
        try:
            return await self.store.create_user(username, hashed)
        except Conflict:
            raise AuthError("name_taken", "that username is taken") from None

    async def login(self, name: object, password: object, *, trusted: bool = False) -> User:
        """The user for a name and password; one generic AuthError for any failure."""
        raw = password.encode("utf-8", "surrogatepass") if isinstance(password, str) else b""
        async with self.hashes.place(trusted) as place:
            doc = None
            if isinstance(name, str) and USERNAME_RE.fullmatch(name):
                doc = await self.store.find_user(name)
            hashed = doc["password"] if doc and doc.get("password") else self._dummy_hash
            ok = await self._check(place, raw, hashed)
        if not ok or doc is None or doc.get("bot"):
            raise AuthError("unauthorized", LOGIN_FAILED)
        return User.from_doc(doc)

    async def start_session(self, user: User) -> str:
        """A new random session id, stored server-side; the cookie carries only this id."""
        sid = secrets.token_urlsafe(32)
        await self.store.create_session(sid, user, self.session_ttl)
        return sid

    async def session_user(self, sid: str) -> User | None:
        return await self.store.session_user(sid)

    async def end_session(self, sid: str) -> None:
        await self.store.delete_session(sid)

    async def change_password(self, user: User, old: object, new: object,
                              keep_sid: str | None, *, trusted: bool = False) -> list[str]:
        """Check the old password, store the new one, revoke every other session.

        The new password is validated first, so a 400 never tells that the old one
        was right, and an invalid request costs no bcrypt.
        """
        raw_new = validate_password(new)
        raw_old = old.encode("utf-8", "surrogatepass") if isinstance(old, str) else b""
        async with self.hashes.place(trusted) as place:
            doc = await self.store.find_user(user.name)
            if doc is None or not await self._check(place, raw_old, doc["password"]):
                raise AuthError("unauthorized", "the current password is wrong")
            hashed = await self._hash(place, raw_new)
        await self.store.set_password(user.id, hashed)
        return await self.store.delete_user_sessions(user.id, keep=keep_sid)

    async def token_user(self, token: str) -> User | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        return await self.store.token_user(token_digest(token))


class HashQueue:
    """This process's bcrypt work: a bounded queue in front of the executor.

    At most `limit` requests hold a place (waiting or hashing); beyond it a flood of
    guesses would queue everyone's login behind minutes of hashing, so the excess is
    refused at once instead (AuthError BUSY, answered 503 with Retry-After). Trusted
    callers (an account logging in from an address it logged in from lately) have a
    quarter more places, and their hashes go to the executor first: at most `threads`
    jobs are in the executor at a time, so none waits there behind a flood.
    """

    def __init__(self, executor: Executor | None, threads: int, limit: int,
                 metrics: Metrics | None = None) -> None:
        self.executor = executor
        self.threads = threads
        self.limit = limit
        self.metrics = metrics
        self.places = 0
        self._running = 0
        self._waiting: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())
        self._seconds = 0.0  # recent time a place was held, smoothed

    @asynccontextmanager
    async def place(self, trusted: bool = False) -> AsyncIterator[Place]:
        """A place in the queue for one request's hashing, or AuthError(BUSY)."""
        if self.places >= self.limit + (self.limit // 4 if trusted else 0):
            if self.metrics is not None:
                self.metrics.bcrypt_busy.inc()
            # About how long the queue takes to drain: what a place in it took lately.
            raise AuthError(BUSY, "too many password checks in progress; try again shortly",
                            retry_after=max(1.0, round(self._seconds, 1)))
        self.places += 1
        start = time.monotonic()
        try:
            yield Place(self, trusted)
        finally:
            self.places -= 1
            self._seconds += (time.monotonic() - start - self._seconds) / 4

    async def run(self, trusted: bool, op: str, fn: Callable[..., T], *args: object) -> T:
        await self._turn(trusted)
        try:
            if self.metrics is not None:
                self.metrics.bcrypt.labels(op=op).inc()
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, fn, *args)
        finally:
            self._pass_turn()

    async def _turn(self, trusted: bool) -> None:
        """Wait for a free executor thread; trusted callers are served first."""
        if self._running < self.threads and not any(self._waiting):
            self._running += 1
            return
        turn = asyncio.get_running_loop().create_future()
        queue = self._waiting[0 if trusted else 1]
        queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._pass_turn()  # handed a turn it will not use
            elif turn in queue:
                queue.remove(turn)
            raise

    def _pass_turn(self) -> None:
        """Hand the finished job's thread to the next waiter, trusted ones first."""
        for queue in self._waiting:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._running -= 1


@dataclass(frozen=True)
class Place:
    """A request's place in the HashQueue."""

    queue: HashQueue
    trusted: bool

    async def run(self, op: str, fn: Callable[..., T], *args: object) -> T:
        return await self.queue.run(self.trusted, op, fn, *args)


TOKEN_PREFIX = "chat_"  # noqa: S105 - a public marker, not a secret


def token_digest(token: str) -> str:
    """Tokens are stored only as their SHA-256: a leaked database reveals none."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh API token and its public id (shown in listings, useless to log in)."""
    secret = secrets.token_urlsafe(32)
    return f"{TOKEN_PREFIX}{secret}", f"{TOKEN_PREFIX}{secret[:8]}"


class Bots:
    """Bot accounts owned by users, and their API tokens."""

    def __init__(self, store: Store, *, max_bots: int = 20, max_tokens: int = 20) -> None:
        self.store = store
        self.max_bots = max_bots  # per owner
        self.max_tokens = max_tokens  # per bot

    async def create(self, owner: User, name: object) -> User:
        botname = validate_username(name)
        try:
            bot = await self.store.create_user(botname, b"", bot=True, owner_id=owner.id,
                                               limit=self.max_bots)
        except Conflict:
            raise AuthError("name_taken", "that name is taken") from None
        except QuotaExceeded as e:
            raise QuotaError(f"you own {e.limit} bots, the most allowed: delete one first",
                             e.limit) from None
        return bot

    async def of_owner(self, owner: User, *, after: str | None = None,
                       limit: int = 1000) -> tuple[list[User], bool]:
        """A page of the owner's bots by name, and whether more exist."""
        return await self.store.bots_of(owner.id, after=after, limit=limit)

    async def owned(self, owner: User, name: str) -> User | None:
        doc = await self.store.find_user(name)
        if doc is None or not doc.get("bot") or doc.get("owner_id") != owner.id:
            return None
        return User.from_doc(doc)

    async def issue_token(self, bot: User, label: str = "") -> tuple[str, dict[str, object]]:
        """A new token: returned once here, stored only as its SHA-256."""
        token, prefix = new_token()
        digest = token_digest(token)
        try:
            doc = await self.store.create_token(bot, digest, prefix, label,
                                                limit=self.max_tokens)
        except QuotaExceeded as e:
            raise QuotaError(f"{bot.name} has {e.limit} tokens, the most allowed: revoke one "
                             "first", e.limit) from None
        # A token issued while its bot was being deleted must not outlive it: the
        # deletion sweeps tokens again after removing the bot, and this check covers
        # a token stored after that sweep.
        if not await self.store.user_exists(bot.id):
            await self.store.delete_tokens(bot.id)
            raise AuthError("not_found", f"no bot named {bot.name!r}")
        return token, _token_view(doc)

    async def tokens(self, bot: User, *, after: str | None = None,
                     limit: int = 1000) -> tuple[list[dict[str, object]], bool] | None:
        """A page of the bot's tokens, oldest first; None if `after` names no token."""
        page = await self.store.tokens_of(bot.id, after=after, limit=limit)
        if page is None:
            return None
        docs, more = page
        return [_token_view(d) for d in docs], more

    async def revoke(self, bot: User, token_id: str) -> str | None:
        """Delete a token by its public id; returns its digest (to close its sockets)."""
        return await self.store.delete_token(bot.id, token_id)

    async def revoke_all(self, bot: User) -> list[str]:
        """Delete every token of a bot; returns their digests (to close their sockets)."""
        return await self.store.delete_tokens(bot.id)

    async def revoke_all_of_owner(self, owner: User) -> list[str]:
        """Delete every token of every bot the owner has; returns their digests."""
        digests: list[str] = []
        after: str | None = None
        while True:
            bots, more = await self.store.bots_of(owner.id, after=after)
            for bot in bots:
                digests += await self.store.delete_tokens(bot.id)
            if not more:
                return digests
            after = bots[-1].name

    async def delete(self, bot: User) -> list[str]:
        """Delete a bot and its tokens; returns the tokens' digests (to close sockets).

        Tokens first: a token whose bot is gone would still authenticate (it carries a
        copy of the bot's user), so none may be left behind. Then the bot, then its
        tokens once more, for one issued meanwhile.
        """
        digests = await self.store.delete_tokens(bot.id)
        await self.store.delete_user(bot.id)
        return digests + await self.store.delete_tokens(bot.id)


def _token_view(doc: dict[str, object]) -> dict[str, object]:
    created = doc["created_at"]
    assert isinstance(created, dt.datetime)
    return {"id": doc["prefix"], "label": doc.get("label", ""),
            "created_at": int(created.timestamp() * 1000)}


def _checkpw(raw: bytes, hashed: bytes) -> bool:
    """bcrypt.checkpw that answers False instead of raising on over-long or odd input."""
    if not raw or len(raw) > PASSWORD_MAX_BYTES:
        # Still spend the bcrypt time, so a long password is not a timing oracle.
        bcrypt.checkpw(b"x", hashed)
        return False
    try:
        return bcrypt.checkpw(raw, hashed)
    except ValueError:
        return False
