"""Accounts and sessions: validation, bcrypt in an executor, server-side sessions."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import bcrypt

from server.cache import Batch, Expiring
from server.envelope import CloseCredential, CloseUser
from server.metrics import Metrics
from server.model import User
from server.store import Conflict, Store, StoreError
from server.tokens import TOKEN_PREFIX, token_digest

log = logging.getLogger(__name__)

T = TypeVar("T")

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 72  # bcrypt's limit: longer input is an error, never truncated
# Sessions looked up lately, by credential digest: a reconnecting crowd costs MongoDB
# one lookup per session per SESSION_CACHE_SECONDS. Revocations drop them at once.
SESSION_CACHE_SECONDS = 10.0
SESSION_CACHE_SIZE = 100_000
# resolve_user remembers a Cookie header that checked out (reconnects send it again), if
# it is at most COOKIE_MEMO_KEY_MAX bytes (ours are ~250): the memo stays under 20 MB.
COOKIE_MEMO_SECONDS = 60.0
COOKIE_MEMO_SIZE = 20_000
COOKIE_MEMO_KEY_MAX = 1024


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
                 max_hashing: int = 32, metrics: Metrics | None = None,
                 session_cache_seconds: float = SESSION_CACHE_SECONDS) -> None:
        self.store = store
        # digest of the session id -> its user; see forget() for what drops entries.
        self.sessions: Expiring[str, User] = Expiring(session_cache_seconds,
                                                       SESSION_CACHE_SIZE)
        # A whole Cookie header -> its session cookie's value, signature checked (only
        # that is saved: the session behind it is looked up, and revocable, as ever).
        self.cookies: Expiring[str, bytes] = Expiring(COOKIE_MEMO_SECONDS, COOKIE_MEMO_SIZE)
        self._session_batch: Batch[str, tuple[User, dt.datetime]] = Batch(
            self.store.session_users)
        # Credentials and user ids revoked lately (-> when): a socket whose lookup
        # finished before the revocation, but which opens after it, is closed (revoked()).
        self._revoked: dict[str, float] = {}
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

    async def register(self, name: object, password: object, *,
                       ticket: Ticket | None = None) -> User:
        """A new account. With a `ticket` (an invite), one of its uses is taken after
        the hashing, just before the account is stored, and given back if the name
        turns out taken or the store fails: a use is spent only on an account made."""
        username = validate_username(name)
        raw = validate_password(password)
        async with self.hashes.place() as place:
            hashed = await self._hash(place, raw)
        if ticket is not None:
            await ticket.take()
        try:
            return await self.store.create_user(username, hashed)
        except Conflict:
            if ticket is not None:
                await ticket.give_back()
            raise AuthError("name_taken", "that username is taken") from None
        except StoreError:
            if ticket is not None:
                await ticket.give_back()
            raise

    async def login(self, name: object, password: object, *, trusted: bool = False) -> User:
        """The user for a name and password; one generic AuthError for any failure."""
        raw = password.encode("utf-8", "surrogatepass") if isinstance(password, str) else b""
        async with self.hashes.place(trusted) as place:
            doc = None
            if isinstance(name, str) and USERNAME_RE.fullmatch(name):
                doc = await self.store.find_user(name)
            hashed = doc["password"] if doc and doc.get("password") else self._dummy_hash
            ok = await self._check(place, raw, hashed)
        # A deactivated account is refused like a wrong password, after the same
        # bcrypt work: neither the answer nor its timing tells it apart.
        if not ok or doc is None or doc.get("bot") or doc.get("deactivated_at"):
            raise AuthError("unauthorized", LOGIN_FAILED)
        return User.from_doc(doc)

    async def start_session(self, user: User) -> str:
        """A new random session id, stored server-side; the cookie carries only this id."""
        sid = secrets.token_urlsafe(32)
        await self.store.create_session(sid, user, self.session_ttl)
        return sid

    async def session_user(self, sid: str) -> User | None:
        """The user of a live session: from the cache, else batched with the other
        lookups of this loop turn into one query."""
        digest = token_digest(sid)
        user = self.sessions.get(digest)
        if user is not None:
            return user
        version = self.sessions.version
        found = await self._session_batch.load(sid)
        if found is None:
            return None
        user, expires = found
        left = (expires - dt.datetime.now(dt.timezone.utc)).total_seconds()
        self.sessions.fill(digest, user, version, min(self.sessions.ttl, left))
        return user

    async def end_session(self, sid: str) -> None:
        await self.store.delete_session(sid)
        self.forget(CloseCredential(token_digest(sid)))

    def forget(self, command: CloseCredential | CloseUser) -> None:
        """A revocation (from this process or another): drop what it makes stale."""
        now = time.monotonic()
        self._forget_old(now)
        match command:
            case CloseCredential(credential):
                self.sessions.drop(credential)
                self._revoked[credential] = now
            case CloseUser(user_ids):
                ids = set(user_ids)
                self.sessions.drop_where(lambda _, user: user.id in ids)
                for uid in ids:
                    self._revoked[uid] = now

    def revoked(self, credential: str | None, user_id: str, since: float) -> bool:
        """Whether the credential or the user was revoked at or after `since`
        (time.monotonic()), within the last SESSION_CACHE_SECONDS."""
        revoked = self._revoked
        if not revoked:  # the common case: nothing revoked lately
            return False
        return any(revoked.get(key, -1.0) >= since
                   for key in (credential, user_id) if key is not None)

    def _forget_old(self, now: float) -> None:
        cutoff = now - SESSION_CACHE_SECONDS
        oldest = next(iter(self._revoked.values()), now)
        if oldest < cutoff:
            self._revoked = {k: t for k, t in self._revoked.items() if t >= cutoff}

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
        revoked = await self.store.delete_user_sessions(user.id, keep=keep_sid)
        for sid in revoked:
            self.forget(CloseCredential(token_digest(sid)))
        return revoked

    async def token_user(self, token: str) -> User | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        return await self.store.token_user(token_digest(token))


class Ticket(Protocol):
    """What admits one registration (an invite): taken once, given back on failure."""

    async def take(self) -> None:
        """Take one use, or raise AuthError."""

    async def give_back(self) -> None:
        """Return the use taken (best effort: a failure is logged, not raised)."""


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
