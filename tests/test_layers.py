"""The engine's layers: every import (lazy ones inside functions too) goes from a package to a lower one, so
no two packages import each other. The app (Qt) sits on top; only the command line, the entry point that
opens the window, imports it (lazily: the engine stays importable without Qt)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LAYERS = {
    # bottom: plain utilities, the face and the audio
    "limits": 0, "curves": 0, "logs": 0, "paths": 0, "face": 0, "audio": 0,
    "motion": 1,  # the motion space over the face
    "data": 2,  # TTS, corpora, real clips
    "models": 3,  # nn.Modules and their configs
    "backends": 4,  # export and runners (torch, onnxruntime, TensorRT)
    "render": 5,
    "sinks": 6,  # Frame, the Sink protocol and the outputs
    "runtime": 7,  # session, pipeline, live/render/say
    "eval": 8,
    "train": 9,
    "cli": 10,
    "app": 11,
}


def _imports(root: Path) -> list[tuple[str, str, str]]:
    """(importing package, imported package, file) for every `engine.X` import under `root`."""
    out = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(REPO)
        me = rel.parts[1].removesuffix(".py") if rel.parts[0] == "engine" else rel.parts[0]
        for node in ast.walk(ast.parse(f.read_text("utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "engine" else [])
            for n in names:
                parts = n.split(".")
                if parts[0] in ("engine", "app") and len(parts) > 1 or n == "app":
                    target = parts[1] if parts[0] == "engine" else "app"
                    if target != me:
                        out.append((me, target, str(rel)))
    return out


def test_every_engine_import_goes_down():
    wrong = [(a, b, f) for a, b, f in _imports(REPO / "engine")
             if a in LAYERS and (b not in LAYERS or LAYERS[b] >= LAYERS[a]) and (a, b) != ("cli", "app")]
    # a package may import its own layer's peers only when they are plain utilities (rank 0 modules)
    wrong = [(a, b, f) for a, b, f in wrong if not (LAYERS.get(b) == 0 and LAYERS.get(a) == 0 and b in
                                                    ("limits", "curves", "logs", "paths"))]
    assert not wrong, "imports going up or sideways:\n" + "\n".join(f"  {f}: {a} -> {b}" for a, b, f in wrong)


def test_no_package_cycles():
    edges: dict[str, set[str]] = {}
    for a, b, _ in _imports(REPO / "engine"):
        edges.setdefault(a, set()).add(b)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted({tuple(sorted((a, b))) for a in edges for b in reach(a) if a in reach(b) and a != b})
    assert cycles == [], f"package pairs in import cycles: {cycles}"


def test_every_engine_package_has_a_layer():
    packages = {p.name for p in (REPO / "engine").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in (REPO / "engine").glob("*.py") if p.stem != "__init__"}
    assert (packages | modules) - set(LAYERS) == set()


def test_only_the_command_line_imports_the_app_and_lazily():
    uses = [(a, f) for a, b, f in _imports(REPO / "engine") if b == "app"]
    assert [a for a, _ in uses] == ["cli"]
    tree = ast.parse((REPO / "engine" / "cli.py").read_text("utf-8"))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not any(getattr(n, "module", "") and n.module.startswith("app") for n in top)
