"""Which kernel build a CPU gets: the best it reports, or the one TUNESMITH_CPU_KERNELS
names; a name it cannot run is an error, never an illegal instruction."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.kernels.cpu import build, isa

AVX2 = frozenset({"fpu", "avx2", "fma", "f16c"})
ALDER_LAKE = AVX2 | {"avx_vnni"}
SAPPHIRE_RAPIDS = ALDER_LAKE | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}


def names(found: list[isa.Isa]) -> list[str]:
    return [i.name for i in found]


def test_the_best_build_the_cpu_reports() -> None:
    assert names(isa.runnable(SAPPHIRE_RAPIDS)) == ["avx512vnni", "avxvnni", "avx2"]
    assert names(isa.runnable(ALDER_LAKE)) == ["avxvnni", "avx2"]
    assert names(isa.runnable(AVX2 | {"avx512f", "avx512_vnni"})) == ["avx2"]  # no BW/VL
    assert names(isa.runnable(frozenset({"sse4_2", "avx"}))) == []
    assert isa.choose(SAPPHIRE_RAPIDS, {}).name == "avx512vnni"  # type: ignore[union-attr]
    assert isa.choose(AVX2, {}).name == "avx2"  # type: ignore[union-attr]
    assert isa.choose(frozenset(), {}) is None


def test_the_environment_forces_one() -> None:
    chosen = isa.choose(SAPPHIRE_RAPIDS, {isa.ENV: "AVX2 "})
    assert chosen is not None and chosen.name == "avx2"
    with pytest.raises(ValueError, match=r"cannot run that build \(it runs: avxvnni, avx2\)"):
        isa.choose(ALDER_LAKE, {isa.ENV: "avx512vnni"})
    with pytest.raises(ValueError, match="not a kernel build: choose from avx512vnni"):
        isa.choose(ALDER_LAKE, {isa.ENV: "sse"})
    assert isa.choose(ALDER_LAKE, {isa.ENV: ""}).name == "avxvnni"  # type: ignore[union-attr]


def test_flags_come_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma f16c avx_vnni\n\nprocessor\t: 1\n")
    assert isa.cpu_features.__wrapped__(info) >= ALDER_LAKE


def test_each_build_has_its_own_name_flags_and_namespace() -> None:
    builds = {i.name: i for i in isa.ISAS}
    assert len({build.build_name(i) for i in isa.ISAS}) == 3
    assert "-mavx512vnni" in build.flags(builds["avx512vnni"])
    assert not any("512" in f or "vnni" in f for f in build.flags(builds["avx2"]))
    assert {i.namespace for i in isa.ISAS} == {
        "tunesmith_avx512vnni", "tunesmith_avxvnni", "tunesmith_avx2"
    }  # fmt: skip


def test_this_machine_loads_the_build_it_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    can = names(isa.runnable(isa.cpu_features()))
    if not can or build.kernels() is None:
        pytest.skip("no CPU kernels here")
    assert build.kernels().name == can[0]  # type: ignore[union-attr]
    monkeypatch.setenv(isa.ENV, can[-1])
    assert build.kernels().name == can[-1]  # type: ignore[union-attr]
