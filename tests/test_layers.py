"""The import contract of docs/ARCHITECTURE.md, checked from the source: `crossnet.agent` imports
nothing else from crossnet (it runs alone as a zipapp on kind nodes), and no module imports one
of a higher layer."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "crossnet"
LAYERS: list[tuple[str, ...]] = [  # lowest first; a module may import its own layer and those below
    ("crossnet.model", "crossnet.wire", "crossnet.yamlsafe", "crossnet.resources"),
    ("crossnet.config", "crossnet.profile", "crossnet.workloads", "crossnet.globalnet", "crossnet.plumbing",
     "crossnet.bgp"),
    ("crossnet.cells", "crossnet.builders", "crossnet.suites", "crossnet.live", "crossnet.judge"),
    ("crossnet.providers", "crossnet.runner", "crossnet.suite_batches"),
    ("crossnet.lifecycle", "crossnet.facts", "crossnet.facts_bgp", "crossnet.evidence", "crossnet.report"),
    ("crossnet.options", "crossnet.plugin", "crossnet.cell_checks", "crossnet.fast_items", "crossnet.cli",
     "crossnet.bench", "crossnet.bundle",
     "crossnet.existing_mode"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for index, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: place it (and in docs/ARCHITECTURE.md)")


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "crossnet" or name.startswith("crossnet.")}


def test_the_agent_imports_nothing_else_from_crossnet() -> None:
    for path in (PACKAGE / "agent").rglob("*.py"):
        outside = {m for m in imports_of(path) if not m.startswith("crossnet.agent")}
        assert not outside, f"{path.relative_to(ROOT)} imports {sorted(outside)}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if module == "crossnet" or module.startswith("crossnet.agent"):
            continue
        own = layer_of(module)
        upward += [f"{module} (layer {own}) imports {name} (layer {layer_of(name)})"
                   for name in sorted(imports_of(path)) if not name.startswith("crossnet.agent")
                   and name != "crossnet" and layer_of(name) > own]
    assert upward == []


def test_no_module_is_longer_than_about_500_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 520}
    assert long == {}
