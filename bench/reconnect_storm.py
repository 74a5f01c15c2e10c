"""Reconnect storm: a process of our server holding N clients is restarted; all resume.

Two `run.py` processes (A and B) share a scratch Redis and MongoDB-wire server (the
same valkey-server and secantusd our server embeds) and one cookie secret. `--clients`
clients (accounts of 20 sockets each, from 127.0.0.2...), one room each out of
`--rooms`, connect to A and join; `--senders` senders on B send to every room, round
robin, `--rate` msg/s each, all along. Then A gets SIGTERM: it closes its sockets with
1001 and every client, after a random 0..1 s, connects to B and resumes with
`join since` (+ `history after` pages), as docs/protocol.md §13 describes.

Reported: seconds from the SIGTERM until 50 / 99 / 100 % of the clients are back
(joined and caught up); lost and duplicated messages by exact `seq` accounting against
the senders' acks; MongoDB operations during the resume (the MongoDB-wire server's own
`serverStatus` opcounters; the steady rate of the senders measured just before is
reported next to it); the close codes seen; and a CPU timeline of A, B, Redis and
MongoDB sampled every 100 ms from /proc (`plots.py` draws it from `--json`).

    python bench/reconnect_storm.py [--clients 5000] [--rooms 50] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import pymongo
from accounts import ApiClient, ws_url
from held import PASSWORD, SOCKETS_PER_USER, raise_nofile, source_ip
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from run_fanout import ROOT, clean_env, environment
from scenario import Seat
from servers import ServerProcess, cpu_of, free_port
from storm_client import worker_main

from server.embedded import mongo_service, start_on_free_port
from server.embedded_redis import redis_service

TEXT = WSMsgType.TEXT
BACK_TIMEOUT_S = 180.0


class StormSender(WSListener):
    """A sender on the process that stays: joins every room, sends round robin."""

    def __init__(self, name: str, cookie: str, rooms: list[str], ip: str) -> None:
        super().__init__()
        self.name, self.cookie, self.rooms, self.ip = name, cookie, rooms, ip
        self.acked: dict[str, set[int]] = {room: set() for room in rooms}
        self.pending: set[str] = set()
        self.errors: Counter[str] = Counter()
        self.sent = 0
        self.ws: WSTransport | None = None
        self.joined = 0
        self.all_joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _listener(self) -> StormSender:
        return self

    async def connect(self, url: str) -> None:
        self.ws, _ = await ws_connect(self._listener, ws_url(url), local_addr=(self.ip, 0),
                                      extra_headers={"Origin": url, "Cookie": self.cookie})
        await asyncio.wait_for(self.all_joined, 60)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not TEXT:
            return
        msg = json.loads(frame.get_payload_as_utf8_text())
        kind = msg.get("type")
        if kind == "hello":
            for room in self.rooms:
                transport.send(TEXT, json.dumps({"type": "join", "room": room}))
        elif kind == "joined":
            self.joined += 1
            if self.joined == len(self.rooms) and not self.all_joined.done():
                self.all_joined.set_result(None)
        elif kind == "ack":
            self.pending.discard(msg.get("client_id"))
            self.acked[msg["room"]].add(msg["seq"])
        elif kind == "error":
            self.errors[str(msg.get("code"))] += 1
            self.pending.discard(msg.get("ref"))

    async def run(self, rate: float, stop: asyncio.Event) -> None:
        """Send `rate` msg/s (open loop) until `stop` is set."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not stop.is_set():
            room = self.rooms[self.sent % len(self.rooms)]
            client_id = f"{self.name}-{self.sent}"
            assert self.ws is not None
            self.ws.send(TEXT, json.dumps({"type": "send", "room": room, "body": "storm",
                                           "client_id": client_id, "ref": client_id}))
            self.pending.add(client_id)
            self.sent += 1
            await asyncio.sleep(max(0.0, start + self.sent / rate - loop.time()))


def opcounters(client: pymongo.MongoClient[Any]) -> dict[str, int]:
    """The MongoDB-wire server's operation counters (its own serverStatus)."""
    return dict(client.admin.command("serverStatus")["opcounters"])


def _since(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    # Minus the serverStatus command that read `b`.
    out = {k: b[k] - a.get(k, 0) for k in b}
    out["command"] = out.get("command", 0) - 1
    return out


async def storm(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Set everything up, restart A under load, account for everything."""
    redis = redis_service(tmp / "redis", persist=False)
    await asyncio.to_thread(redis.start)
    mongo = await asyncio.to_thread(start_on_free_port, lambda: mongo_service(tmp / "mongo"))
    env = {**clean_env(), "REDIS_URL": redis.url, "MONGO_URL": mongo.url,
           "COOKIE_SECRET": secrets.token_hex(24)}
    servers: dict[str, ServerProcess] = {}
    pool = ThreadPoolExecutor(max_workers=args.workers + 2)
    mongo_client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo.url)
    procs: list[Any] = []
    try:
        for name in ("A", "B"):
            port = free_port()
            servers[name] = ServerProcess(name, [
                sys.executable, "run.py", "--port", str(port), "--host", "127.0.0.1",
                "--data-dir", str(tmp / f"data-{name}"), "--shutdown-timeout", "10"],
                cwd=ROOT, port=port, log_path=tmp / f"{name}.log", env=env)
            await asyncio.to_thread(servers[name].start)
        a, b = servers["A"], servers["B"]
        rooms = [f"storm{r}" for r in range(args.rooms)]
        users = [f"storm{u}" for u in range(-(-args.clients // SOCKETS_PER_USER))]
        senders = [f"stormsender{s}" for s in range(args.senders)]
        api = ApiClient(b.url)
        try:
            accounts = await api.accounts(
                [(n, source_ip(i, args.clients)) for i, n in enumerate(users + senders)],
                PASSWORD)
            for r, room in enumerate(rooms):
                await api.ensure_room(room, accounts[users[(r // 40) % len(users)]])
        finally:
            api.close()
        seats = [Seat(rooms[i % args.rooms], users[i // SOCKETS_PER_USER],
                      accounts[users[i // SOCKETS_PER_USER]].cookie, False,
                      source_ip(i, args.clients)) for i in range(args.clients)]
        # Clients to A, from worker processes.
        ctx = multiprocessing.get_context("spawn")
        conns = []
        for w in range(args.workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, daemon=True, args=(
                child, a.url, b.url, seats[w :: args.workers], args.jitter, 64,
                args.since_skew))
            proc.start()
            child.close()
            conns.append(parent)
            procs.append(proc)
        loop = asyncio.get_running_loop()

        async def ask(timeout: float) -> list[Any]:
            def one(conn: Any) -> Any:
                if not conn.poll(timeout):
                    raise TimeoutError(f"no word from a storm worker in {timeout:.0f} s")
                kind, value = conn.recv()
                if kind == "error":
                    raise RuntimeError(f"storm worker: {value}")
                return value
            return list(await asyncio.gather(*(loop.run_in_executor(pool, one, c)
                                               for c in conns)))

        t_connect = time.monotonic()
        await ask(600)
        connect_s = time.monotonic() - t_connect
        # Senders on B, sending from now until every client is back and a little more.
        sender_clients = [StormSender(n, accounts[n].cookie, rooms, source_ip(i, 1000))
                          for i, n in enumerate(senders)]
        await asyncio.gather(*(s.connect(b.url) for s in sender_clients))
        stop = asyncio.Event()
        sending = [asyncio.ensure_future(s.run(args.rate, stop)) for s in sender_clients]
        steady0 = await asyncio.to_thread(opcounters, mongo_client)
        await asyncio.sleep(args.steady)
        ops_t0 = await asyncio.to_thread(opcounters, mongo_client)
        steady = _since(steady0, ops_t0)
        # CPU timeline of both processes and the services, every 100 ms from now on.
        assert redis.proc is not None and mongo.proc is not None
        pids = {"A": a.pid, "B": b.pid, "redis-server": redis.proc.pid,
                "secantusd": mongo.proc.pid}
        timeline: list[list[Any]] = []
        t0 = time.monotonic()

        async def sample() -> None:
            while True:
                timeline.append([round(time.monotonic() - t0, 2),
                                 {k: cpu_of(p) for k, p in pids.items()}])
                await asyncio.sleep(0.1)

        sampler = asyncio.ensure_future(sample())
        await asyncio.sleep(1.0)
        sigterm_at = time.monotonic()
        stopping = asyncio.ensure_future(asyncio.to_thread(a.stop))
        backs = [t for share in await ask(BACK_TIMEOUT_S) for t in share]
        ops_back = await asyncio.to_thread(opcounters, mongo_client)
        all_back_s = time.monotonic() - sigterm_at
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*sending)
        drain_until = time.monotonic() + 10
        pending = any(s.pending for s in sender_clients)
        while pending and time.monotonic() < drain_until:  # acks of several senders
            await asyncio.sleep(0.05)
            pending = any(s.pending for s in sender_clients)
        sampler.cancel()
        acked: dict[str, set[int]] = {room: set() for room in rooms}
        for s in sender_clients:
            for room, seqs in s.acked.items():
                acked[room] |= seqs
        for conn in conns:
            conn.send(("check", acked))
        results = await ask(60)
        code, stop_s, leftovers = await stopping
        for s in sender_clients:
            if s.ws is not None:
                s.ws.disconnect()
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        for server in servers.values():
            if server.proc is not None and server.proc.poll() is None:
                await asyncio.to_thread(server.stop)
        mongo_client.close()
        mongo.stop()
        redis.stop()
        pool.shutdown(wait=False, cancel_futures=True)
    back_s = sorted(t - sigterm_at for t in backs)
    counts: Counter[str] = Counter()
    for r in results:
        counts.update(r["counts"])
    resume_s = max(1e-9, all_back_s)
    return {
        "clients": args.clients, "rooms": args.rooms, "senders": args.senders,
        "rate_per_sender": args.rate, "connect_s": round(connect_s, 2),
        "back_s": {"p50": round(back_s[len(back_s) // 2], 3),
                   "p99": round(back_s[min(len(back_s) - 1, int(0.99 * len(back_s)))], 3),
                   "p100": round(back_s[-1], 3)},
        "sent": sum(s.sent for s in sender_clients),
        "acked": sum(len(v) for v in acked.values()),
        "send_errors": dict(sum((s.errors for s in sender_clients), Counter())),
        "acks_missing": sum(len(s.pending) for s in sender_clients),
        "lost": sum(r["lost"] for r in results),
        "duplicates": counts.pop("duplicates", 0),
        "resent_above_contiguous": counts.pop("already_had", 0),
        "client_counts": dict(counts),
        "mongo_ops_during_resume": _since(ops_t0, ops_back),
        "resume_window_s": round(resume_s, 2),
        "mongo_ops_per_s_steady": {k: round(v / args.steady, 1) for k, v in steady.items()},
        "old_process": {"exit_code": code, "stop_s": round(stop_s, 2),
                        "children_left_behind": leftovers},
        "sigterm_at_s": round(sigterm_at - t0, 2),
        "timeline": timeline,
    }


def summary(r: dict[str, Any]) -> str:
    b = r["back_s"]
    return "\n".join([
        f"reconnect storm: {r['clients']} clients in {r['rooms']} rooms on A (joined in "
        f"{r['connect_s']} s), {r['senders']} senders x {r['rate_per_sender']:g} msg/s on B",
        f"  back on B (joined + caught up) after SIGTERM to A: 50 % {b['p50']} s, "
        f"99 % {b['p99']} s, 100 % {b['p100']} s",
        f"  sent {r['sent']}, acked {r['acked']}, acks missing {r['acks_missing']}, "
        f"send errors {r['send_errors'] or 'none'}",
        f"  lost {r['lost']}, duplicated {r['duplicates']} (re-sent above contiguous, "
        f"expected: {r['resent_above_contiguous']}); clients saw {r['client_counts']}",
        f"  MongoDB ops during the {r['resume_window_s']} s resume: "
        f"{r['mongo_ops_during_resume']}; steady per s before: {r['mongo_ops_per_s_steady']}",
        f"  A: exit {r['old_process']['exit_code']} in {r['old_process']['stop_s']} s, "
        f"children left behind {r['old_process']['children_left_behind'] or 'none'}",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--rate", type=float, default=4.0, help="msg/s per sender (<= 5)")
    parser.add_argument("--jitter", type=float, default=1.0, metavar="SECONDS",
                        help="clients wait a random 0..this before reconnecting")
    parser.add_argument("--steady", type=float, default=5.0, metavar="SECONDS",
                        help="sending before the restart (MongoDB ops baseline)")
    parser.add_argument("--workers", type=int, default=4, help="client processes")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs")
    parser.add_argument("--since-skew", type=int, default=0, metavar="N",
                        help="harness self-check: resume with since = contiguous + N, so "
                        "that up to N messages per client must be reported lost")
    args = parser.parse_args()
    if not 1 <= args.clients <= 9000 or not 1 <= args.rooms <= 100 or args.rate > 5:
        parser.error("--clients 1..9000, --rooms 1..100, --rate <= 5 (the server's limit)")
    raise_nofile()
    env = environment()
    runs = []
    for n in range(args.repeat):
        tmp = tempfile.mkdtemp(prefix="bench-storm-")
        try:
            result = asyncio.run(storm(args, Path(tmp)))
        finally:
            if args.keep:
                print(f"logs kept in {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        print(f"run {n + 1} " + summary(result), flush=True)
        runs.append(result)
    meds = {q: round(statistics.median(r["back_s"][q] for r in runs), 3)
            for q in ("p50", "p99", "p100")}
    final = {"bench": "reconnect_storm", "runs": runs, "medians": {"back_s": meds},
             "environment": env,
             "params": {k: (str(v) if isinstance(v, Path) else v)
                        for k, v in vars(args).items()}}
    if args.repeat > 1:
        print(f"medians over {args.repeat} runs: back after {meds}")
    if args.json:
        args.json.write_text(json.dumps(final, indent=1, sort_keys=True))
        print(f"results written to {args.json}")
    if any(r["lost"] or r["duplicates"] for r in runs):
        sys.exit("reconnect_storm: messages were lost or duplicated")


if __name__ == "__main__":
    main()
