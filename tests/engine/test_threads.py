"""The thread count of the C++ step, chosen from the cores its threads really get: the rules
on a fake clock, and on this machine beside a spinning process (a ratio, not a time)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from tunesmith.config import LMConfig
from tunesmith.engine import threads as threads_module
from tunesmith.engine.cpu_step import CpuKernelStep
from tunesmith.engine.int8 import quantize_linears
from tunesmith.engine.prepare import build_step
from tunesmith.engine.threads import FIRST_PROBE, IdleCores, ThreadChooser
from tunesmith.kernels.cpu import build
from tunesmith.models.lm import MusicGenLM


def make(idle: float | None = None) -> ThreadChooser:
    """A chooser whose look at the machine's idle cores says `idle` (None: cannot tell)."""
    return ThreadChooser(idle=lambda: idle)


def steps(chooser: ThreadChooser, most: int, cores_free: float, count: int) -> list[int]:
    """`count` steps of 50 ms wall each where the threads get min(threads, cores_free) cores."""
    used = []
    for _ in range(count):
        n = chooser.choose(most)
        used.append(n)
        chooser.took(n, 0.05, 0.05 * min(n, cores_free))
    return used


def test_keeps_every_thread_while_each_has_its_core() -> None:
    chooser = make()
    assert set(steps(chooser, 2, 2.0, 500)) == {2}


def test_a_busy_core_takes_a_thread_away_at_once() -> None:
    chooser = make()
    used = steps(chooser, 2, 1.05, 1000)
    assert used[:2] == [2, 1]
    # and tries of 2 threads (no idle count to hold them back), ever rarer: 16, 32, ... 256
    # steps after the one before
    assert used.count(2) <= 1 + 5
    assert chooser.wait > FIRST_PROBE


def test_a_core_lost_for_a_moment_takes_no_thread() -> None:
    chooser = make()
    for cores in (1.55, 2.0, 1.55, 2.0, 1.55, 2.0):  # short now and then, never twice in a row
        steps(chooser, 2, cores, 1)
    assert chooser.current == 2
    steps(chooser, 2, 1.55, 2)  # twice in a row: a core is gone
    assert chooser.current == 1


def test_the_core_back_gives_the_thread_back() -> None:
    chooser = make()
    steps(chooser, 2, 1.0, 50)
    assert chooser.current == 1
    used = steps(chooser, 2, 2.0, 2 * threads_module.LAST_PROBE)
    assert chooser.current == 2 and used[-1] == 2


def test_a_core_taken_for_a_moment_is_back_soon() -> None:
    """One window without a core (the host's, for a moment) costs QUICK_PROBE steps on one
    thread, not FIRST_PROBE."""
    chooser = make(idle=1.0)  # the other core idle since the last look
    steps(chooser, 2, 0.9, 1)
    assert chooser.current == 1
    used = steps(chooser, 2, 2.0, threads_module.QUICK_PROBE + 2)
    assert used[threads_module.QUICK_PROBE] == 2 and chooser.current == 2


def test_fewer_cores_than_before_and_one_thread() -> None:
    chooser = make()
    steps(chooser, 4, 4.0, 10)
    assert chooser.current == 4
    assert steps(chooser, 2, 2.0, 5) == [2] * 5  # torch's count lowered meanwhile: follow it
    single = make()
    assert set(steps(single, 1, 0.3, 100)) == {1}


@pytest.mark.skipif(not build.available(), reason="no CPU kernels here")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores")
def test_beside_a_busy_core_two_threads_are_not_slower_than_one() -> None:
    """A decoder large enough that its steps take milliseconds, stepping on torch's 2 threads
    (the chooser free) and on 1, in turns, while another process spins on one core."""
    torch.manual_seed(0)
    lm = MusicGenLM(
        LMConfig(vocab_size=256, hidden_size=1024, num_layers=6, num_heads=16, ffn_dim=4096)
    )
    quantize_linears(lm, "int8")
    step = build_step(lm.eval())
    assert isinstance(step, CpuKernelStep) and step.kernel is not None
    kernel = step.kernel
    text = torch.randn(1, 5, 1024)
    threads = torch.get_num_threads()

    def run(fixed: int | None, count: int = 300) -> float:
        chooser = ThreadChooser()  # as the step has it: it looks at /proc/stat
        cache = step.new_cache(2, count + 8, text, torch.ones(1, 5))
        tokens = torch.zeros(2, lm.cfg.num_codebooks, 1, dtype=torch.long)
        positions = lm.buffer_positions(cache)
        start = time.perf_counter()
        for position in range(count):
            if fixed is None:
                chooser.run(2, lambda n, p=position: kernel(tokens, p, cache, positions, n))
            else:
                kernel(tokens, position, cache, positions, fixed)
        return time.perf_counter() - start

    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 60\n"
                                "while time.time() < end: pass"])  # fmt: skip
    try:
        torch.set_num_threads(2)
        time.sleep(0.2)
        with torch.inference_mode():
            adaptive, single = [], []
            for _ in range(3):
                adaptive.append(run(None))
                single.append(run(1))
    finally:
        spinner.kill()
        spinner.wait()
        torch.set_num_threads(threads)
    ratio = sorted(adaptive)[1] / sorted(single)[1]
    print(f"2 threads beside a busy core: {ratio:.2f}x the time of 1")
    assert ratio < 1.25, f"2 threads beside a busy core took {ratio:.2f}x the time of 1"


def test_no_try_while_the_machine_has_no_idle_core() -> None:
    busy = make(idle=0.1)
    used = steps(busy, 2, 1.0, 3000)
    assert used.count(2) == 1  # the first step only: no try with every core taken
    free = make(idle=1.0)
    steps(free, 2, 1.0, 10)
    assert free.current == 1
    steps(free, 2, 2.0, 300)  # a core idle again: the try is made, and kept
    assert free.current == 2


def test_idle_cores_read_from_proc_stat(tmp_path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1\ncpu1 1\n")
    idle = IdleCores(str(stat))
    stat.write_text("cpu  200 0 100 900 0 0 0 0 0 0\ncpu0 1\ncpu1 1\n")
    assert idle() == pytest.approx(1.0)  # half the jiffies idle, of 2 CPUs
    assert IdleCores(str(tmp_path / "none"))() is None
