"""The package's shape, read from its own source: the import graph (lazy imports inside
functions and TYPE_CHECKING ones counted) has no cycle and every arrow points down the layers
the README's map shows; the models and kernels stay leaves; no C++ hides in a Python string;
no file grows past 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tunesmith"

# Each part's layer, top (interfaces) to bottom (leaves): an import may point to its own
# layer's parts or below, never up. A part is a folder, or a module at the package's top.
LAYERS: list[tuple[str, ...]] = [
    ("cli", "server", "__main__"),  # interfaces
    ("jobs", "training"),  # batch jobs and fine-tuning: work the CLI (and a cluster runner) drive
    ("__init__", "musicgen"),  # the public API
    ("composition",),  # a piece as a timeline of sections: calls generation, not the engine
    ("generation", "checkpoints", "audio", "finishing"),  # decode loop; loading; audio; finishing
    ("engine",),  # how a step runs: step strategies, weight formats, memory
    ("models",),  # the networks: torch and config only
    ("kernels",),  # C++ kernels and their bindings
    ("options", "config", "errors"),  # plain data every layer may read
]
RANK = {part: i for i, parts in enumerate(LAYERS) for part in parts}
# What a part may import besides itself (stricter than its layer allows).
ONLY: dict[str, set[str]] = {
    "models": {"config", "errors"},
    "kernels": set(),
    "options": {"errors"},
    "config": {"errors"},
    "errors": set(),
    "composition": {"generation", "audio", "options", "config", "errors"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every tunesmith module `path` imports, anywhere in the file, as absolute names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "tunesmith"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "tunesmith":
                continue
            for alias in node.names:  # `from . import x` may name a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
    return {m for m in found if m in MODULES}


FILES = sorted(p for p in PACKAGE.rglob("*.py") if "testing" not in p.parts)
MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {module_name(p): imports(p) for p in FILES}


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_has_a_layer() -> None:
    assert {part(m) for m in GRAPH} <= set(RANK)


def test_no_import_cycle() -> None:
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        path.append(module)
        for target in sorted(GRAPH.get(module, ())):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_arrows_point_down_the_layers() -> None:
    upward = [
        f"{source} -> {target}"
        for source, targets in GRAPH.items()
        for target in targets
        if part(target) != part(source) and RANK[part(target)] < RANK[part(source)]
    ]
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


@pytest.mark.parametrize("leaf", sorted(ONLY))
def test_leaves_import_only_what_they_may(leaf: str) -> None:
    allowed = ONLY[leaf] | {leaf}
    wrong = [
        f"{source} -> {target}"
        for source, targets in GRAPH.items()
        if part(source) == leaf
        for target in targets
        if part(target) not in allowed
    ]
    assert not wrong, f"{leaf} may import only {sorted(allowed)}:\n" + "\n".join(wrong)


def test_no_cpp_in_python_files() -> None:
    markers = ("#include <", "TORCH_LIBRARY", "__m256", "#pragma omp")
    holding = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if any(m in p.read_text() for m in markers)
    ]
    assert not holding, f"C++ in Python files: {holding} (it belongs in kernels/cpu/csrc)"


def test_no_file_over_500_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*")
        if p.suffix in (".py", ".h", ".cpp", ".js", ".css", ".html")
        and (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, f"files over 500 lines: {long}"


def test_the_graph_is_read() -> None:
    """The test reads real arrows (it would pass on an empty graph otherwise)."""
    assert "tunesmith.models.lm" in GRAPH["tunesmith.engine.step"]
    assert "tunesmith.options" in GRAPH["tunesmith.cli.arguments"]
    assert "tunesmith.kernels.cpu.ops" in GRAPH["tunesmith.kernels.cpu.build"]  # lazy import
