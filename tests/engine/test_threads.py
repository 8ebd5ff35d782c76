"""The thread count of the C++ step, chosen from the cores its threads really get: the rules
on a fake clock, and the C++ step following them. Nothing here is timed: how fast the choice
runs beside a busy core is `benchmarks/bench_step.py --busy 1`'s to measure."""

from __future__ import annotations

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
@pytest.mark.parametrize("cores_had", [1.0, 2.0])
def test_the_cpu_step_runs_on_the_count_its_chooser_measures(cores_had: float) -> None:
    """The C++ step asks its chooser for every step's thread count and tells it each step's
    times. Where the process's CPU time says its 2 threads had one core between them (the
    other core busy), the steps go to 1 thread after the first window and stay there while no
    core is idle; where they had both, they stay on 2. (How fast the choice is beside a real
    busy core is a timing, measured side by side by `benchmarks/bench_step.py --busy 1`.)"""
    torch.manual_seed(0)
    lm = MusicGenLM(
        LMConfig(vocab_size=64, hidden_size=128, num_layers=2, num_heads=2, ffn_dim=256)
    )
    quantize_linears(lm, "int8")
    step = build_step(lm.eval())
    assert isinstance(step, CpuKernelStep) and step.kernel is not None
    kernel = step.kernel
    used: list[int] = []  # the thread count of each C++ call

    class Watched:
        def __getattr__(self, name: str) -> object:
            return getattr(kernel, name)

        def __call__(self, *args: object) -> object:
            used.append(args[4])  # (tokens, position, cache, positions, threads, ...)
            return kernel(*args)

    chooser = ThreadChooser(idle=lambda: 0.0)  # no core idle: no try of 2 threads
    measured = chooser.took

    def took(threads: int, wall: float, cpu: float) -> None:
        """Each step's times as 1 ms with `cores_had` of the 2 cores."""
        measured(threads, 0.001, 0.001 * min(threads, cores_had))

    chooser.took = took  # type: ignore[method-assign]
    step.chooser, step.kernel = chooser, Watched()  # type: ignore[assignment]
    cache = step.new_cache(2, 300, torch.randn(1, 5, 128), torch.ones(1, 5))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            for _ in range(250):
                step.guided(torch.zeros(2, lm.cfg.num_codebooks, 1, dtype=torch.long), cache, 3.0)
    finally:
        torch.set_num_threads(threads)
    assert len(used) == 250 and used[0] == 2
    if cores_had == 1.0:  # one window (5 ms of steps) on 2 threads, then 1 for good
        assert used[:5] == [2] * 5 and set(used[5:]) == {1}
    else:
        assert set(used) == {2}


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
