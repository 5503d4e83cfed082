"""No import cycles in `src/dsvl`, and Hydra / OmegaConf imported only in `dsvl.cli` (imports inside functions count:
they only postpone the cycle or the dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

import dsvl

SRC = Path(dsvl.__file__).resolve().parent
KNOWN: set[frozenset[str]] = set()  # cycles being cut by work in flight, each with the edge that cuts it


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The dsvl modules `name` imports (a name imported from a package counts as its submodule when it is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_cycles() -> set[frozenset[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.add(frozenset(group))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_new_import_cycles() -> None:
    assert import_cycles() <= KNOWN, sorted(map(sorted, import_cycles() - KNOWN))


def test_the_scan_finds_a_cycle(tmp_path, monkeypatch) -> None:
    """The scanner itself: two modules importing each other inside functions are one cycle."""
    pkg = tmp_path / "dsvl"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from dsvl.b import g\n")
    (pkg / "b.py").write_text("from . import a\ndef g():\n    pass\n")
    monkeypatch.setitem(globals(), "SRC", pkg)
    assert import_cycles() == {frozenset({"dsvl.a", "dsvl.b"})}


def config_library_imports(src: Path) -> list[str]:
    """`module: name` for every import of hydra or omegaconf outside `dsvl.cli` (inside functions too)."""
    found = []
    for path in sorted(src.rglob("*.py")):
        module = ".".join(path.relative_to(src.parent).with_suffix("").parts)
        if module == "dsvl.cli" or module.startswith("dsvl.cli."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            found += [f"{module}: {n}" for n in names if n.split(".")[0] in ("hydra", "omegaconf")]
    return found


def test_only_cli_imports_hydra_and_omegaconf(tmp_path) -> None:
    assert config_library_imports(SRC) == []
    (tmp_path / "dsvl" / "model").mkdir(parents=True)  # the scan itself finds an import inside a function
    (tmp_path / "dsvl" / "model" / "x.py").write_text("def f():\n    from omegaconf import OmegaConf\n")
    assert config_library_imports(tmp_path / "dsvl") == ["dsvl.model.x: omegaconf"]

