"""Login, registration and password-change throttles under parallel guessing.

Every test drives a real server over HTTP behind a trusted proxy (`X-Forwarded-For`,
as `--xheaders` does in production), so each request can come from an address of the
test's choosing, and fires its guesses all at once through a client of its own that
does not queue them. How often bcrypt ran is read from the server's Prometheus
counters, as an operator would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
import tornado.httpserver
import tornado.testing
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from server.config import Config
from server.embedded import ChildService
from server.limits import LimitSettings
from server.runtime import Runtime
from tests.client import PASSWORD, Client, unique_name
from tests.conftest import Node, close_node, redis_url_of
from tests.services import Services

WRONG = "not the password"


def throttled(config: Config, **limits: Any) -> Config:
    """The shipped login limits (unless overridden), without the message and
    registration limits that other tests' set-ups would trip."""
    settings = dataclasses.replace(LimitSettings(), message_rate=10_000,
                                   message_burst=10_000, registrations_per_ip=100_000)
    return dataclasses.replace(config, xheaders=True,
                               limits=dataclasses.replace(settings, **limits))


async def open_proxied_node(config: Config, services: Services, *,
                            redis_url: str | None = None) -> Node:
    """A whole server that trusts X-Forwarded-For, as run.py with --xheaders."""
    rt = Runtime(config, mongo_url=services.mongo_url,
                 redis_url=redis_url or services.redis_url)
    await rt.start()
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(rt.app, xheaders=config.xheaders)
    server.add_socket(sock)
    return Node(rt, server, f"http://127.0.0.1:{port}")


def bcrypt_runs(node: Node, op: str = "check") -> float:
    value = node.runtime.metrics.registry.get_sample_value("chat_bcrypt_total", {"op": op})
    return value or 0.0


def busy_answers(node: Node) -> float:
    return node.runtime.metrics.registry.get_sample_value("chat_bcrypt_busy_total") or 0.0


class Crowd:
    """Many HTTP requests at once, each from an address of the caller's choosing.

    Its own client with room for every request, so none waits behind another in a
    client-side queue (the shared AsyncHTTPClient runs 10 at a time).
    """

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.http = AsyncHTTPClient(force_instance=True, max_clients=1000)
        self.xsrf = ""

    async def start(self) -> Crowd:
        response = await self.http.fetch(self.base + "/")
        for raw in response.headers.get_list("Set-Cookie"):
            if raw.startswith("_xsrf="):
                self.xsrf = raw.split(";", 1)[0].split("=", 1)[1]
        assert self.xsrf
        return self

    async def post(self, path: str, body: dict[str, Any], ip: str,
                   session: str | None = None) -> tuple[int, Any, dict[str, str]]:
        cookie = f"_xsrf={self.xsrf}" + (f"; session={session}" if session else "")
        request = HTTPRequest(
            self.base + path, method="POST", body=json.dumps(body), request_timeout=120,
            headers={"Cookie": cookie, "X-XSRFToken": self.xsrf, "X-Forwarded-For": ip,
                     "Content-Type": "application/json"})
        response = await self.http.fetch(request, raise_error=False)
        assert response.code != 599, response.error
        parsed = json.loads(response.body) if response.body else None
        return response.code, parsed, dict(response.headers)

    async def login(self, name: str, password: str, ip: str
                    ) -> tuple[int, Any, dict[str, str]]:
        return await self.post("/api/login", {"username": name, "password": password}, ip)

    async def logins(self, name: str, password: str, ips: Iterable[str]
                     ) -> list[tuple[int, Any, dict[str, str]]]:
        """One login per address, all at once."""
        return await asyncio.gather(*(self.login(name, password, ip) for ip in ips))

    async def register(self, ip: str, name: str | None = None
                       ) -> tuple[int, Any, dict[str, str]]:
        return await self.post("/api/register",
                               {"username": name or unique_name("tl"), "password": PASSWORD},
                               ip)

    def close(self) -> None:
        self.http.close()


def statuses(replies: Iterable[tuple[int, Any, dict[str, str]]]) -> Counter[int]:
    return Counter(status for status, _, _ in replies)


def assert_throttled(replies: Iterable[tuple[int, Any, dict[str, str]]]) -> None:
    """Every 429 says when to come back, in the header and in the body."""
    for status, body, headers in replies:
        if status == 429:
            assert body["error"]["code"] == "rate_limited", body
            assert int(headers["Retry-After"]) >= 1, headers
            assert body["error"]["retry_after"] > 0, body


async def registered(crowd: Crowd, ip: str) -> str:
    status, body, _ = await crowd.register(ip)
    assert status == 201, body
    return body["name"]


async def test_200_parallel_wrong_passwords_get_at_most_the_limit_of_401s_and_bcrypts(
        config, services):
    node = await open_proxied_node(throttled(config), services)
    crowd = await Crowd(node.base_url).start()
    try:
        name = await registered(crowd, "203.0.113.5")
        before = bcrypt_runs(node)
        replies = await crowd.logins(name, WRONG, ["198.51.100.7"] * 200)
        counts = statuses(replies)
        # The shipped limit: 10 per account from one address, then 429 without a bcrypt.
        assert set(counts) <= {401, 429}, counts
        assert 1 <= counts[401] <= 10 and counts[429] >= 190, counts
        assert bcrypt_runs(node) - before == counts[401]
        assert_throttled(replies)
        # The right password does not help from there now...
        status, _, _ = await crowd.login(name, PASSWORD, "198.51.100.7")
        assert status == 429
        # ...but its owner, at home, is not locked out.
        status, body, _ = await crowd.login(name, PASSWORD, "203.0.113.5")
        assert status == 200, body
        assert bcrypt_runs(node) - before == counts[401] + 1
    finally:
        crowd.close()
        await close_node(node)


async def test_owner_logs_in_from_a_new_address_while_an_attacker_hammers_their_name(
        config, services):
    node = await open_proxied_node(throttled(config), services)
    crowd = await Crowd(node.base_url).start()
    try:
        name = await registered(crowd, "203.0.113.5")
        attack = asyncio.ensure_future(crowd.logins(name, WRONG, ["198.51.100.7"] * 100))
        # From an address this account never used, while the guesses pour in and after.
        during = await crowd.login(name, PASSWORD, "192.0.2.44")
        replies = await attack
        after = await crowd.login(name, PASSWORD, "192.0.2.45")
        assert during[0] == 200 and after[0] == 200, (during, after)
        assert statuses(replies)[401] <= 10, statuses(replies)
        assert_throttled(replies)
    finally:
        crowd.close()
        await close_node(node)


async def test_guesses_from_many_addresses_stop_at_the_account_ceiling_but_not_its_owner(
        config, services):
    node = await open_proxied_node(
        throttled(config, login_failures_per_account_anywhere=20), services)
    crowd = await Crowd(node.base_url).start()
    try:
        name = await registered(crowd, "203.0.113.5")
        before = bcrypt_runs(node)
        botnet = [f"10.{i // 250}.{i % 250}.1" for i in range(60)]
        replies = await crowd.logins(name, WRONG, botnet)
        counts = statuses(replies)
        assert set(counts) <= {401, 429} and 1 <= counts[401] <= 20, counts
        assert bcrypt_runs(node) - before == counts[401]
        assert_throttled(replies)
        # The address the account was created from passes the ceiling...
        assert (await crowd.login(name, PASSWORD, "203.0.113.5"))[0] == 200
        # ...and so does any address it logged in from; a stranger's is slowed.
        assert (await crowd.login(name, PASSWORD, "10.200.0.1"))[0] == 429
        other = await registered(crowd, "10.200.0.1")  # the ceiling is per account
        assert (await crowd.login(other, PASSWORD, "10.200.0.2"))[0] == 200
    finally:
        crowd.close()
        await close_node(node)


async def test_ipv6_addresses_of_one_64_share_a_bucket(config, services):
    node = await open_proxied_node(throttled(config, login_failures_per_ip=5), services)
    crowd = await Crowd(node.base_url).start()
    try:
        # Spraying: one wrong password for each of many names, the source address
        # changing within one /64 every time.
        sprayed = [await crowd.login(f"victim{i}", WRONG, f"2001:db8:1:2::{i + 1:x}")
                   for i in range(5)]
        assert statuses(sprayed) == {401: 5}
        replies = [await crowd.login(f"victim{i}", WRONG, f"2001:db8:1:2:{i:x}::9")
                   for i in range(5, 10)]
        assert statuses(replies) == {429: 5}
        assert_throttled(replies)
        # The neighbouring /64 is somebody else.
        assert (await crowd.login("victim0", WRONG, "2001:db8:1:3::1"))[0] == 401
        # One account from one /64 is one bucket too.
        name = await registered(crowd, "2001:db8:9:9::1")
        per_pair = await crowd.logins(
            name, WRONG, [f"2001:db8:7:7:{i:x}::1" for i in range(30)])
        assert statuses(per_pair)[401] <= 5, statuses(per_pair)
    finally:
        crowd.close()
        await close_node(node)


async def test_full_bcrypt_queue_answers_503_with_retry_after_and_frees_itself(
        config, services):
    # Real cost, so hashes take long enough for a queue of 2 to fill.
    node = await open_proxied_node(
        dataclasses.replace(throttled(config), bcrypt_rounds=12, bcrypt_queue=2), services)
    crowd = await Crowd(node.base_url).start()
    try:
        name = await registered(crowd, "203.0.113.5")
        checks, busy = bcrypt_runs(node), busy_answers(node)
        addresses = [f"10.1.{i}.1" for i in range(40)]
        replies = await crowd.logins(name, PASSWORD, addresses)
        counts = statuses(replies)
        assert set(counts) == {200, 503}, counts
        for status, body, headers in replies:
            if status == 503:
                assert body["error"]["code"] == "unavailable", body
                assert int(headers["Retry-After"]) >= 1, headers
                assert body["error"]["retry_after"] >= 1, body
        # A refused login ran no bcrypt and says so on /metrics.
        assert bcrypt_runs(node) - checks == counts[200]
        assert busy_answers(node) - busy == counts[503]
        # Registrations share the queue.
        regs = await asyncio.gather(*(crowd.register(f"10.2.{i}.1") for i in range(20)))
        assert set(statuses(regs)) == {201, 503}, statuses(regs)
        # The queue drains by itself: those refused get in when they come back.
        refused = [ip for (status, _, _), ip in zip(replies, addresses, strict=True)
                   if status == 503]
        retried = [await crowd.login(name, PASSWORD, ip) for ip in refused[:3]]
        assert [status for status, _, _ in retried] == [200] * len(retried)
    finally:
        crowd.close()
        await close_node(node)


async def test_owner_at_a_known_address_gets_in_first_during_a_flood_of_guesses(
        config, services):
    # 12 places for hashing (3 more for known addresses), 4 bcrypt threads; cost 13
    # (~0.7 s a hash) keeps them busy long after the first refusals.
    node = await open_proxied_node(
        dataclasses.replace(throttled(config), bcrypt_rounds=13, bcrypt_queue=12), services)
    crowd = await Crowd(node.base_url).start()
    try:
        name = await registered(crowd, "203.0.113.5")
        flood = [asyncio.ensure_future(crowd.login(name, WRONG, f"10.3.{i}.1"))
                 for i in range(60)]
        status, body, _ = await next(asyncio.as_completed(flood))
        assert status == 503, body  # the queue is full: the first answer is a refusal
        owner, stranger = await asyncio.gather(
            crowd.login(name, PASSWORD, "203.0.113.5"),
            crowd.login(name, PASSWORD, "192.0.2.99"))
        assert owner[0] == 200, owner
        assert stranger[0] == 503, stranger
        # The owner's hash went ahead of the guesses already waiting for a thread.
        assert sum(not f.done() for f in flood) >= 1
        replies = await asyncio.gather(*flood)
        assert statuses(replies)[401] <= 12, statuses(replies)
    finally:
        crowd.close()
        await close_node(node)


async def test_wrong_current_passwords_are_throttled_per_user_like_failed_logins(
        config, services):
    node = await open_proxied_node(throttled(config, login_failures_per_account=3), services)
    crowd = await Crowd(node.base_url).start()
    try:
        me = Client(node.base_url)
        status, body, _ = await me.request(
            "POST", "/api/register", {"username": unique_name("pw"), "password": PASSWORD},
            headers={"X-Forwarded-For": "203.0.113.5"})
        assert status == 201, body
        name, session = body["name"], me.cookies["session"]

        def change(old: str, ip: str) -> Any:
            return crowd.post("/api/password",
                              {"old_password": old, "new_password": "a new passphrase"},
                              ip, session=session)

        # A stolen session guessing the current password, all at once.
        replies = await asyncio.gather(*(change(WRONG, "198.51.100.7") for _ in range(30)))
        counts = statuses(replies)
        assert set(counts) <= {401, 429} and 1 <= counts[401] <= 3, counts
        assert_throttled(replies)
        # Moving to other addresses does not buy more guesses: the bucket is the user's.
        assert (await change(WRONG, "198.51.100.8"))[0] == 429
        assert (await change(PASSWORD, "192.0.2.9"))[0] == 429
        # They counted as failed logins of that user from that address.
        assert (await crowd.login(name, PASSWORD, "198.51.100.7"))[0] == 429
        # Its owner still logs in, and the password is unchanged.
        assert (await crowd.login(name, PASSWORD, "203.0.113.5"))[0] == 200
        # A new password that is not valid costs no attempt and checks nothing.
        other = Client(node.base_url)
        status, body, _ = await other.request(
            "POST", "/api/register", {"username": unique_name("pw"), "password": PASSWORD},
            headers={"X-Forwarded-For": "203.0.113.6"})
        assert status == 201
        for _ in range(5):
            status, _, _ = await crowd.post(
                "/api/password", {"old_password": PASSWORD, "new_password": "short"},
                "203.0.113.6", session=other.cookies["session"])
            assert status == 400
        status, _, _ = await crowd.post(
            "/api/password", {"old_password": PASSWORD, "new_password": "a new passphrase"},
            "203.0.113.6", session=other.cookies["session"])
        assert status == 204
    finally:
        crowd.close()
        await close_node(node)


@pytest.mark.parametrize("fault", ["killed", "hung"])
async def test_throttles_count_in_each_process_while_redis_is_down(
        config, services, private_redis: ChildService, fault: str):
    node = await open_proxied_node(throttled(config, registrations_per_ip=3), services,
                                   redis_url=redis_url_of(private_redis))
    crowd = await Crowd(node.base_url).start()
    proc = private_redis.proc
    assert proc is not None
    try:
        name = await registered(crowd, "203.0.113.5")
        if fault == "killed":
            proc.kill()
            await asyncio.to_thread(proc.wait)
            private_redis.proc = None
        else:
            os.kill(proc.pid, signal.SIGSTOP)
        before = bcrypt_runs(node)
        replies = await crowd.logins(name, WRONG, ["198.51.100.7"] * 200)
        counts = statuses(replies)
        assert set(counts) <= {401, 429}, counts
        assert 1 <= counts[401] <= 10 and counts[429] >= 190, counts
        assert bcrypt_runs(node) - before == counts[401]
        assert_throttled(replies)
        # The owner still logs in, from anywhere the attacker is not.
        assert (await crowd.login(name, PASSWORD, "203.0.113.5"))[0] == 200
        assert (await crowd.login(name, PASSWORD, "192.0.2.44"))[0] == 200
        # Registrations are counted too: 3 from an address, then 429.
        regs = await asyncio.gather(*(crowd.register("192.0.2.50") for _ in range(10)))
        assert statuses(regs) == {201: 3, 429: 7}, statuses(regs)
    finally:
        if fault == "hung":
            os.kill(proc.pid, signal.SIGCONT)
        crowd.close()
        await close_node(node)


async def wait_ready(node: Node, within: float = 10.0) -> None:
    """Poll /readyz as a load balancer does until Redis and MongoDB answer."""
    client = Client(node.base_url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (await client.request("GET", "/readyz"))[0] != 200:
        assert loop.time() < deadline, f"/readyz not 200 within {within}s"
        await asyncio.sleep(0.1)  # probe interval of the poller, not a guess


async def test_redis_restarted_empty_does_not_reset_what_a_process_counted(
        config, services, private_redis: ChildService):
    node = await open_proxied_node(throttled(config), services,
                                   redis_url=redis_url_of(private_redis))
    crowd = await Crowd(node.base_url).start()
    try:
        name = await registered(crowd, "203.0.113.5")
        assert private_redis.proc is not None
        private_redis.proc.kill()
        await asyncio.to_thread(private_redis.proc.wait)
        private_redis.proc = None
        before = bcrypt_runs(node)
        outage = await crowd.logins(name, WRONG, ["198.51.100.7"] * 100)
        assert 1 <= statuses(outage)[401] <= 10, statuses(outage)
        await asyncio.to_thread(private_redis.start)  # same port, no data
        await wait_ready(node)
        after = await crowd.logins(name, WRONG, ["198.51.100.7"] * 100)
        assert statuses(after) == {429: 100}, statuses(after)
        assert_throttled(after)
        assert bcrypt_runs(node) - before == statuses(outage)[401]
        assert (await crowd.login(name, PASSWORD, "203.0.113.5"))[0] == 200
    finally:
        crowd.close()
        await close_node(node)
