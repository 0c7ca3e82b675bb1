"""The layers point one way: what fuses, evaluates, exports or benchmarks never reaches into training.

A static check (every import statement of each module, function-level ones included), so it holds whatever
code path a test happens to run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "csakd"

#: Layer of each module or package (lower numbers may not import higher ones).
LAYERS = {
    0: ["errors", "lazy", "files", "envinfo", "metrics", "normalization", "devices", "degradation", "data",
        "demo_scene"],
    1: ["models", "checkpoint", "losses", "baselines"],
    2: ["inference/pipeline", "inference/fuse", "inference/tiled", "inference/tiling", "inference/passes",
        "inference/onnx_runtime", "inference/export", "inference/geo", "inference/checks", "inference/__init__",
        "evaluate", "eval_run", "bench", "figures", "api"],
    3: ["train"],
    4: ["demo", "fit", "cli", "__main__"],
}


def layer_of(module: str) -> int | None:
    """The layer of a dotted csakd module name (``csakd.inference.fuse``), or None for csakd itself."""
    path = module.removeprefix("csakd").lstrip(".").replace(".", "/")
    best: tuple[int, int] | None = None
    for layer, names in LAYERS.items():
        for name in names:
            if path == name or path.startswith(name + "/"):
                if best is None or len(name) > best[1]:
                    best = (layer, len(name))
    return None if best is None else best[0]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name == "csakd" or name.startswith("csakd.")}


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_layer() -> None:
    missing = [str(p.relative_to(SRC)) for p in modules()
               if p.name != "__init__.py" or p.parent != SRC
               if layer_of("csakd." + ".".join(p.relative_to(SRC).with_suffix("").parts)) is None]
    assert not missing, f"modules without a layer in tests/test_layers.py: {missing}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    name = "csakd." + ".".join(path.relative_to(SRC).with_suffix("").parts)
    own = layer_of(name.removesuffix(".__init__"))
    if own is None:
        return
    higher = sorted(m for m in imports_of(path) if (layer_of(m) or -1) > own)
    assert not higher, f"{name} (layer {own}) imports {higher}"


def test_fusion_evaluation_export_and_bench_never_import_training() -> None:
    for rel in ("inference/pipeline.py", "inference/fuse.py", "inference/tiled.py", "inference/tiling.py",
                "inference/passes.py", "inference/onnx_runtime.py", "inference/export.py", "evaluate.py", "eval_run.py",
                "bench.py", "checkpoint.py"):
        assert not any(m.startswith("csakd.train") for m in imports_of(SRC / rel)), rel
