"""How many threads a barrier-synchronized step should use, measured as it runs.

The C++ step's threads meet at a barrier between dependent stages, a few hundred times a
step. When the OS gives one of their cores to another program (a browser, a second job, the
server's own HTTP thread), every barrier waits for the thread that lost its core: beside one
spinning process on 2 cores, a tiny checkpoint's step took 0.09 ms at the median on 2 threads
but 4.7 ms on average (some steps 100 ms), against 0.13 ms on 1.

Step times are too heavy-tailed to compare, so `ThreadChooser` watches what the step gets
instead: the process's CPU time during the step against the step's wall time, the cores its
threads really ran on (spinning at a barrier counts: the thread had its core). When that falls
short of the thread count by `LOST` cores in two windows in a row (5 ms of steps each: one
step at full size), or by twice that in one, one thread fewer; now and then a window tries one
thread more, kept if its threads all ran. The first try comes soon after the loss
(`QUICK_PROBE` steps: the host may have taken the core for a moment); a try that finds a core
still taken waits twice as long before the next (up to `LAST_PROBE` steps). On Linux a try is
made only when the machine has had a core idle since the last look (`IdleCores`, from
/proc/stat), since each step that tries a taken core costs ten or more steps' time. The step's
sums are the same on any count (each output is one thread's sum), so the choice never changes
the music.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

WINDOW_SECONDS = 0.005  # a window of steps measured together is this long...
MAX_WINDOW = 16  # ... or this many steps (tiny ones)
LOST = 0.4  # cores missing on average over a window that take a thread away
SHORT_WINDOWS = 2  # ... in that many windows in a row
FIRST_PROBE = 128  # steps before trying one thread more, after a change
# ... but after losing a thread, the first try comes this soon: a core the host took for a
# moment (one slow window at full size) is back long before 128 steps (~2 s) are over.
QUICK_PROBE = 16
LAST_PROBE = 2048  # the longest wait between tries


class IdleCores:
    """The cores this machine left idle since the last call (Linux's /proc/stat); None where
    that cannot be read."""

    def __init__(self, path: str = "/proc/stat") -> None:
        self.path = path
        self.last = self._read()

    def __call__(self) -> float | None:
        now = self._read()
        before, self.last = self.last, now
        if now is None or before is None or now[1] <= before[1]:
            return None
        return (now[0] - before[0]) / (now[1] - before[1]) * now[2]

    def _read(self) -> tuple[float, float, int] | None:
        """(idle jiffies, all jiffies, CPUs) of the whole machine."""
        try:
            with open(self.path) as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
        fields = [float(v) for v in lines[0].split()[1:]] if lines else []
        if len(fields) < 5 or not cpus:
            return None
        return fields[3] + fields[4], sum(fields[:8]), cpus  # idle + iowait


@dataclass
class ThreadChooser:
    """The thread count for the next step, out of 1..most (torch's count, read each step)."""

    current: int | None = None
    probing: bool = False
    wait: int = FIRST_PROBE
    since: int = 0  # steps at the current count since the last change or try
    wall: float = 0.0  # this window's step time
    cpu: float = 0.0  # and the process's CPU time during it
    steps: int = 0  # steps in this window
    short: int = 0  # windows in a row that fell short of their cores
    clock: Callable[[], float] = field(default=time.process_time, repr=False)
    idle: Callable[[], float | None] = field(default_factory=IdleCores, repr=False)

    def run(self, most: int, step: Callable[[int], T]) -> T:
        """`step(threads)` on the chosen count, measured."""
        threads = self.choose(most)
        wall, cpu = time.perf_counter(), self.clock()
        out = step(threads)
        self.took(threads, time.perf_counter() - wall, self.clock() - cpu)
        return out

    def choose(self, most: int) -> int:
        if self.current is None or self.current > most:
            self._move(most)
        assert self.current is not None
        if self.probing:
            return self.current + 1
        if self.current < most and self.since >= self.wait:
            free = self.idle()
            if free is not None and free < 1 - LOST:  # every core still busy: no try
                self.wait, self.since = min(LAST_PROBE, 2 * self.wait), 0
                return self.current
            self.probing, self.wall, self.cpu, self.steps = True, 0.0, 0.0, 0
            return self.current + 1
        return self.current

    def took(self, threads: int, wall: float, cpu: float) -> None:
        """Record one step: `wall` seconds on `threads` threads, `cpu` seconds of CPU."""
        self.wall, self.cpu, self.steps = self.wall + wall, self.cpu + cpu, self.steps + 1
        self.since += 1
        if self.wall < WINDOW_SECONDS and self.steps < MAX_WINDOW:
            return
        cores = self.cpu / self.wall  # the cores the step's threads had, on average
        assert self.current is not None
        if self.probing:
            self.probing = False
            if cores >= threads - LOST:
                self._move(threads)
                return
            self.wait, self.since = min(LAST_PROBE, 2 * self.wait), 0
        elif threads > 1 and cores < threads - LOST:
            self.short += 1
            # Not one stolen time slice: a core is gone (a whole one missing says so at once).
            if self.short >= SHORT_WINDOWS or cores < threads - 2 * LOST:
                self._move(threads - 1)
                self.wait = QUICK_PROBE
                return
        else:
            self.short = 0
        self.wall, self.cpu, self.steps = 0.0, 0.0, 0

    def _move(self, threads: int) -> None:
        self.current, self.wait, self.since, self.short = threads, FIRST_PROBE, 0, 0
        self.probing, self.wall, self.cpu, self.steps = False, 0.0, 0.0, 0
