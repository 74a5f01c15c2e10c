"""Fan-out benchmark of our server against the minimal baseline, in one run.

For each repeat: start `bench/baseline_server.py`, run the scenario, stop it; start our
`run.py` (embedded Redis and MongoDB-wire server, fresh data directory), wait for
`/readyz`, run the same scenario, stop it with SIGTERM. Then print the medians and the
ratio ours / baseline. With `--target URL` the scenario runs against an already-running
server instead and nothing is started.

    python bench/run_fanout.py --repeat 3
    python bench/run_fanout.py --target http://127.0.0.1:18888
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scenario as scenario_flags
import tornado
from accounts import SetupError
from loadgen import run_fanout
from report import NOISY_OTHER_CPU_PCT, summary
from scenario import Scenario
from servers import ServerProcess, free_port

# Variables run.py reads: the run uses its defaults (embedded services, fresh secret).
OUR_SERVER_ENV = {"MONGO_URL", "REDIS_URL", "PORT", "HOST", "PROCESSES", "ALLOWED_ORIGINS",
                  "LOG_LEVEL", "LOG_FORMAT", "COOKIE_SECRET", "SHUTDOWN_TIMEOUT",
                  "ADMIN_USERS", "STATUS_TOKEN"}
START_ATTEMPTS = 3
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

# (label, getter) for the comparison table; latencies in ms.
METRICS: list[tuple[str, Callable[[dict[str, Any]], float | None]]] = [
    ("deliveries/s", lambda r: r["deliveries_per_s"]),
    ("latency p50 ms", lambda r: r["latency_ms"]["p50"]),
    ("latency p95 ms", lambda r: r["latency_ms"]["p95"]),
    ("latency p99 ms", lambda r: r["latency_ms"]["p99"]),
    ("latency max ms", lambda r: r["latency_ms"]["max"]),
    ("ack p50 ms", lambda r: r["ack_latency_ms"]["p50"]),
    ("ack p99 ms", lambda r: r["ack_latency_ms"]["p99"]),
    ("server CPU % (all its processes)", lambda r: r["server_cpu_pct"]),
    ("- Tornado process", lambda r: _part(r, "server")),
    ("- redis-server", lambda r: _part(r, "redis-server")),
    ("- secantusd (MongoDB wire)", lambda r: _part(r, "secantusd")),
    ("server CPU us/delivery", lambda r: r["server_cpu_us_per_delivery"]),
    ("load generator CPU %", lambda r: r["loadgen_cpu_pct"]),
    ("load generator CPU us/delivery", lambda r: r["loadgen_cpu_us_per_delivery"]),
    ("machine CPU % (of 100 x cores)", lambda r: r["machine_cpu_pct"]),
    ("other processes' CPU %", lambda r: r.get("other_cpu_pct")),
]


def _part(result: dict[str, Any], name: str) -> float | None:
    parts = result.get("server_cpu_parts_pct") or {}
    value = parts.get(name)
    return None if value is None else float(value)


COUNTS = ("sent", "acked", "rejected", "acks_missing", "lost", "duplicates", "disconnects",
          "acked_after_error")


def medians(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each metric; correctness counts are summed over the runs, not medianed."""
    out: dict[str, Any] = {}
    for label, get in METRICS:
        values = [v for v in (get(r) for r in results) if v is not None]
        out[label] = round(statistics.median(values), 2) if values else None
    for key in COUNTS:
        out[key + " (sum)"] = sum(r[key] for r in results)
    out["runs passed"] = f"{sum(r['passed'] for r in results)}/{len(results)}"
    out["noisy runs kept"] = sum(_noisy(r) for r in results)
    return out


def comparison(base: dict[str, Any], ours: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """A Markdown table of both medians and the ratio ours / baseline."""
    ratios: dict[str, float] = {}
    rows = ["| metric (median) | baseline | ours | ours / baseline |", "|---|---:|---:|---:|"]
    for label, _ in METRICS:
        b, o = base[label], ours[label]
        ratio = ""
        if isinstance(b, int | float) and isinstance(o, int | float) and b:
            ratios[label] = round(o / b, 2)
            ratio = f"{o / b:.2f}"
        rows.append(f"| {label} | {_fmt(b)} | {_fmt(o)} | {ratio} |")
    for key in [k + " (sum)" for k in COUNTS] + ["runs passed", "noisy runs kept"]:
        rows.append(f"| {key} | {base[key]} | {ours[key]} | |")
    return "\n".join(rows), ratios


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


async def start_server(make: Callable[[int], ServerProcess]) -> tuple[ServerProcess, float]:
    """Start a server on a free port; try other ports if it fails to come up."""
    for attempt in range(1, START_ATTEMPTS + 1):
        server = make(free_port())
        try:
            return server, await asyncio.to_thread(server.start)
        except RuntimeError as exc:
            if attempt == START_ATTEMPTS:
                raise
            print(f"{server.name} did not start ({exc}); trying another port", flush=True)
    raise AssertionError("unreachable")


async def run_baseline(
    scenario: Scenario, workdir: Path, label: str, idle_wait: float, extra: list[str]
) -> dict[str, Any]:
    """Start the baseline server, run the scenario against it, stop it."""
    def make(port: int) -> ServerProcess:
        argv = [sys.executable, str(BENCH / "baseline_server.py"), "--port", str(port), *extra]
        return ServerProcess("baseline", argv, cwd=ROOT, port=port,
                             log_path=workdir / f"{label}-{port}.log")

    server, _ = await start_server(make)
    try:
        return await run_fanout(
            server.url, scenario, label, cpu_probe=server.cpu_seconds, idle_wait=idle_wait
        )
    finally:
        await asyncio.to_thread(server.stop)


async def run_socketio(
    scenario: Scenario, workdir: Path, label: str, idle_wait: float, extra: list[str]
) -> dict[str, Any]:
    """Start python-socketio + a scratch Redis (`targets.py`), run the scenario, stop."""
    from targets import start_target  # targets.py builds on this module

    target = await start_target("socketio", workdir, label)
    try:
        return await run_fanout(
            target.url, dataclasses.replace(scenario, protocol="socketio"), label,
            cpu_probe=target.cpu_seconds, idle_wait=idle_wait,
        )
    finally:
        await asyncio.to_thread(target.stop)


def clean_env() -> dict[str, str]:
    """This environment minus what would point our server at other services or ports."""
    return {
        k: v for k, v in os.environ.items()
        if k not in OUR_SERVER_ENV and not k.startswith("CHAT_")
    }


async def run_ours(
    scenario: Scenario, workdir: Path, label: str, idle_wait: float, extra: list[str]
) -> dict[str, Any]:
    """Start `run.py` on a fresh data directory, run the scenario, SIGTERM it and check."""
    def make(port: int) -> ServerProcess:
        argv = [sys.executable, "run.py", "--port", str(port), "--host", "127.0.0.1",
                "--data-dir", str(workdir / f"{label}-{port}-data"), *extra]
        return ServerProcess("ours", argv, cwd=ROOT, port=port,
                             log_path=workdir / f"{label}-{port}.log", env=clean_env())

    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "server", "run.py"))
    server, ready_s = await start_server(make)
    try:
        result = await run_fanout(
            server.url, scenario, label, cpu_probe=server.cpu_seconds, idle_wait=idle_wait
        )
    except BaseException:
        await asyncio.to_thread(server.stop)
        raise
    code, stop_s, leftovers = await asyncio.to_thread(server.stop)
    result["server_start_s"] = round(ready_s, 2)
    result["server_commit"] = commit + ("+dirty" if dirty else "")
    result["server_stop"] = {"exit_code": code, "seconds": round(stop_s, 2),
                             "children_left_behind": leftovers}
    return result


def report_run(result: dict[str, Any]) -> None:
    """Print one run's summary and its JSON line."""
    print(summary(result))
    if "server_stop" in result:
        stop = result["server_stop"]
        print(f"  server {result['server_commit']}: ready in {result['server_start_s']} s; "
              f"SIGTERM -> exit "
              f"{stop['exit_code']} in {stop['seconds']} s; children left behind: "
              f"{stop['children_left_behind'] or 'none'}")
    print(json.dumps(result, sort_keys=True), flush=True)


def _noisy(result: dict[str, Any]) -> bool:
    other = result.get("other_cpu_pct")
    return other is not None and other > NOISY_OTHER_CPU_PCT


async def compare(
    scenario: Scenario,
    repeat: int,
    keep: bool,
    servers: tuple[str, ...],
    idle_wait: float,
    retry_noisy: int,
    extra_args: dict[str, list[str]],
) -> dict[str, Any]:
    """Baseline then ours, `repeat` times; print both medians and the ratios.

    A run during which other processes used noticeable CPU is redone up to
    `retry_noisy` times; the quietest attempt counts.
    """
    workdir = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "ours": [], "socketio": []}
    runners = {"baseline": run_baseline, "ours": run_ours, "socketio": run_socketio}
    try:
        for i in range(1, repeat + 1):
            for name in servers:
                attempts: list[dict[str, Any]] = []
                while len(attempts) <= retry_noisy:
                    label = f"{name}-{i}" + (f"-try{len(attempts) + 1}" if attempts else "")
                    result = await runners[name](
                        scenario, workdir, label, idle_wait, extra_args[name]
                    )
                    report_run(result)
                    attempts.append(result)
                    if not _noisy(result):
                        break
                best = min(attempts, key=lambda r: r.get("other_cpu_pct") or 0.0)
                best["attempts"] = len(attempts)
                runs[name].append(best)
    finally:
        if keep:
            print(f"logs and data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if len(servers) == 1:
        meds = medians(runs[servers[0]])
        print(f"\nmedians over {repeat} run(s) of {servers[0]}:")
        for key, value in meds.items():
            print(f"  {key}: {_fmt(value)}")
        return {"kind": "fanout-single", "repeat": repeat, servers[0]: meds}
    base = medians(runs["baseline"]) if "baseline" in servers else None
    final: dict[str, Any] = {"kind": "fanout-comparison", "repeat": repeat}
    for name in servers:
        final[name] = medians(runs[name])
        if base is None or name == "baseline":
            continue
        # "ours" is the baseline server's other column, as before; socketio has its own.
        table, ratios = comparison(base, final[name])
        if name != "ours":
            table = table.replace("| ours |", f"| {name} |").replace("ours / baseline",
                                                                   f"{name} / baseline")
        print(f"\nmedians over {repeat} run(s) each, same scenario, same machine:\n{table}")
        final[f"ratio_{name}_over_baseline"] = ratios
    return final


async def against_target(
    target: str, scenario: Scenario, repeat: int, idle_wait: float
) -> dict[str, Any]:
    """Run the scenario `repeat` times against a running server."""
    results = []
    for i in range(1, repeat + 1):
        result = await run_fanout(target, scenario, f"target-{i}", idle_wait=idle_wait)
        report_run(result)
        results.append(result)
    meds = medians(results)
    print(f"\nmedians over {repeat} run(s) against {target}:")
    for key, value in meds.items():
        print(f"  {key}: {_fmt(value)}")
    return {"kind": "fanout-target", "repeat": repeat, "target": target, "medians": meds}


def environment() -> dict[str, Any]:
    """Where and how this run happened, for the record."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         "")
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "python": platform.python_version(),
        "tornado": tornado.version,
        "cores": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "server_commit": _git("rev-parse", "--short", "HEAD"),
        # Uncommitted changes to the server under test make a run hard to reproduce.
        "server_tree_dirty": bool(_git("status", "--porcelain", "--", "server", "run.py")),
    }


def _git(*args: str) -> str:
    """Output of a git command in the repository ('' if git is unavailable)."""
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def main() -> None:
    """Parse flags, run the comparison (or the target run), print the final JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per server (1..10)")
    parser.add_argument("--target", help="run against this already-running server only")
    parser.add_argument("--keep", action="store_true", help="keep server logs and data dirs")
    parser.add_argument("--servers", choices=("both", "all", "baseline", "ours", "socketio"),
                        default="both", help="which servers to start: both = baseline and "
                        "ours; all = also python-socketio + Redis (socketio_server.py)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each run sends, wait up to this long for a quiet machine")
    parser.add_argument("--ours-args", default="", metavar="ARGS",
                        help="extra run.py arguments, e.g. '--processes 2'")
    parser.add_argument("--baseline-args", default="", metavar="ARGS",
                        help="extra baseline_server.py arguments, e.g. '--no-gc-freeze'")
    parser.add_argument("--retry-noisy", type=int, default=0, metavar="N",
                        help="redo a run up to N times when other processes used CPU during it")
    scenario_flags.add_flags(parser)
    args = parser.parse_args()
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat must be 1..10")
    if not 0 <= args.retry_noisy <= 5:
        parser.error("--retry-noisy must be 0..5")
    scenario = scenario_flags.from_flags(args)
    env = environment()
    print("environment: " + json.dumps(env, sort_keys=True), flush=True)
    try:
        if args.target:
            final = asyncio.run(
                against_target(args.target, scenario, args.repeat, args.wait_idle)
            )
        else:
            servers = {"both": ("baseline", "ours"), "all": ("baseline", "ours", "socketio")
                       }.get(args.servers, (args.servers,))
            extra = {"ours": shlex.split(args.ours_args),
                     "baseline": shlex.split(args.baseline_args), "socketio": []}
            final = asyncio.run(
                compare(scenario, args.repeat, args.keep, servers, args.wait_idle,
                        args.retry_noisy, extra)
            )
    except (SetupError, RuntimeError, ValueError, OSError) as exc:
        sys.exit(f"run_fanout: {exc}")
    final["environment"] = env
    print(json.dumps(final, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
