"""CPU accounting for benchmarks: the whole machine (/proc/stat) and the measured window."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

# Cumulative CPU seconds of the server under test, per part ("server", "redis-server", ...).
CpuProbe = Callable[[], dict[str, float]]


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (Linux /proc/stat), else None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    # Steal time is the hypervisor's, not a process's here: it is not counted as busy.
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


async def wait_until_idle(timeout: float, busy_pct: float = 10.0) -> float | None:
    """Wait (at most `timeout` s) for 2 s in which the machine is under `busy_pct` busy.

    Returns the busy percentage last seen (None where /proc/stat is unavailable).
    """
    deadline = time.monotonic() + timeout
    busy: float | None = None
    while True:
        before = machine_busy_seconds()
        await asyncio.sleep(2.0)
        after = machine_busy_seconds()
        if before is None or after is None:
            return None
        busy = 100 * (after - before) / 2.0
        if busy < busy_pct or time.monotonic() >= deadline:
            return round(busy, 1)


class Window:
    """CPU accounting over the measured window (from the agreed start to the drain)."""

    def __init__(
        self, cpu_probe: CpuProbe | None, on_begin: Callable[[], None] | None = None
    ) -> None:
        self.cpu_probe = cpu_probe
        self.on_begin = on_begin
        self.begun = 0.0
        self.server0: dict[str, float] = {}
        self.machine0 = 0.0
        self.wall = 0.0
        self.server_cpu_s: dict[str, float] | None = None
        self.machine_cpu_s: float | None = None

    def begin(self) -> None:
        """Sample the clocks at the start of sending."""
        if self.on_begin:
            self.on_begin()
        self.begun = time.perf_counter()
        self.server0 = self.cpu_probe() if self.cpu_probe else {}
        self.machine0 = machine_busy_seconds() or 0.0

    def end(self) -> None:
        """Sample the clocks after the drain."""
        self.wall = max(1e-9, time.perf_counter() - self.begun)
        if self.cpu_probe:
            now = self.cpu_probe()
            self.server_cpu_s = {k: v - self.server0.get(k, 0.0) for k, v in now.items()}
        machine = machine_busy_seconds()
        if machine is not None:
            self.machine_cpu_s = machine - self.machine0
