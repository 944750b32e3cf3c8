"""The package layout reads like the data flow, and lower layers never import higher ones.

Walks every module's imports with `ast` (module-level and function-level alike) and checks them against
the layer order below, and that the module import graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.pure

PACKAGE = ROOT / "edged"

#: Layer of each top-level part of the package; a module may import only its own layer and lower ones.
LAYERS: dict[str, int] = {
    # core: value types, errors, settings, files, distances, process facts, ONNX Runtime settings
    "types": 0, "errors": 0, "fileio": 0, "distance": 0, "machine": 0, "config": 0, "__init__": 0,
    "onnxrt": 0,  # ONNX Runtime session settings
    "vision": 1,   # decoding, detection, landmarks, alignment (pure)
    "camera": 1,   # the one video reader and the grabber thread
    "embed": 2,    # embedder contract, dlib ResNet, nn4
    "models": 3,   # registry, model store, embedders by name
    "gallery": 4,  # SQLite store, transfer, matching, calibration, enrollment
    "eval": 5, "train": 6, "runtime": 5,  # protocols and training; the daemon and its sinks
    "web": 5,      # the web page and REST API: a sink of the daemon, or `edged web` alone
    "fleet": 5,    # boxes sharing one gallery over MQTT: keys, signed records, the sync thread
    "bench": 7,    # measures everything
    "cli": 8, "__main__": 8,  # thin handlers
}
#: Parts of one layer that must not import each other.
SIBLINGS_APART = [("vision", "camera"), ("eval", "runtime"), ("train", "runtime"), ("eval", "web"), ("train", "web")]


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """edged modules imported anywhere in the file (resolved to the longest known module name)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            if not target.startswith("edged"):
                continue
            while target and target not in known:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                found.add(target)
    return found


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, name, set(mods)) for name, path in mods.items()}


def test_every_part_has_a_layer() -> None:
    assert {part(m) for m in modules()} <= set(LAYERS), sorted({part(m) for m in modules()} - set(LAYERS))


def test_lower_layers_never_import_higher_ones() -> None:
    wrong = []
    for module, deps in graph().items():
        for dep in deps:
            if LAYERS[part(dep)] > LAYERS[part(module)]:
                wrong.append(f"{module} -> {dep}")
            if (part(module), part(dep)) in SIBLINGS_APART or (part(dep), part(module)) in SIBLINGS_APART:
                wrong.append(f"{module} -> {dep} (siblings)")
    assert not wrong, "\n".join(sorted(wrong))


def test_vision_embed_gallery_models_never_import_runtime_or_cli() -> None:
    for module, deps in graph().items():
        if part(module) in ("vision", "embed", "gallery", "models", "camera"):
            assert not {part(d) for d in deps} & {"runtime", "cli", "bench", "eval", "train"}, (module, deps)


def test_no_import_cycles() -> None:
    g = graph()
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    edges = {m: {d for d in deps if m != d.rsplit(".", 1)[0]} for m, deps in g.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_finds_what_it_should(tmp_path: Path) -> None:
    """The walker is real: it sees function-level and relative imports."""
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from edged.runtime import daemon\n    from ..cli import main\n")
    found = imports_of(source, "edged.vision.mod", set(modules()))
    assert {"edged.runtime.daemon", "edged.cli"} <= found
