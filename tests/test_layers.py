"""The layers run one way: every import in the product code, lazy ones inside functions included,
points down (or sideways within a layer), Spark and Ray jobs never import each other, and no
modules import each other in a circle.

    schemas (contracts) < encore (core) < jobs (Spark) | ray_jobs (Ray) < encore.pipeline < dags
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "encore", "jobs", "ray_jobs", "dags")
DAG_MODULES = {p.stem for p in (REPO / "dags").glob("*.py")}

LAYERS = {"contracts": 0, "core": 1, "spark jobs": 2, "ray jobs": 2, "pipeline": 3, "dags": 4}


def layer_of(module: str) -> str | None:
    top = module.split(".")[0]
    if top == "schemas":
        return "contracts"
    if module == "encore.pipeline" or module.startswith("encore.pipeline."):
        return "pipeline"
    if top == "encore":
        return "core"
    if top == "jobs":
        return "spark jobs"
    if top == "ray_jobs":
        return "ray jobs"
    if top == "dags" or top in DAG_MODULES:
        return "dags"
    return None   # a third-party or standard-library module


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "dags":
        return parts[-1]   # Airflow puts dags/ itself on sys.path
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def product_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every project module ``path`` imports, at any depth of the file (lazy imports too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from encore import music` imports the module encore.music, not only the package
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and layer_of(target):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = product_modules()
    known = set(modules)
    return {name: imports_of(path, name, known) for name, path in modules.items()}


def test_every_product_module_has_a_layer():
    assert {name: layer_of(name) for name in product_modules() if layer_of(name) is None} == {}


def test_imports_point_down_and_jobs_never_import_each_other():
    wrong = []
    for importer, targets in import_graph().items():
        for target in targets:
            a, b = layer_of(importer), layer_of(target)
            if LAYERS[b] > LAYERS[a] or {a, b} == {"spark jobs", "ray jobs"}:
                wrong.append(f"{importer} ({a}) imports {target} ({b})")
    assert wrong == []


def test_no_import_cycles():
    graph = import_graph()
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(node):   # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The checker itself: an import inside a function counts, and a back-arrow is reported."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from encore.pipeline.cli import main\n    import ray_jobs.score\n")
    known = {"encore.pipeline.cli", "ray_jobs.score", "jobs.clean"}
    found = imports_of(source, "jobs.clean", known)
    assert found == {"encore.pipeline.cli", "ray_jobs.score"}
    assert LAYERS[layer_of("encore.pipeline.cli")] > LAYERS[layer_of("jobs.clean")]


def test_table_names_are_constants_not_strings():
    """Product code names tables through schemas.table_names, never through a quoted name."""
    from schemas import table_names
    names = {v for k, v in vars(table_names).items() if k.isupper()}
    quoted = []
    for name, path in product_modules().items():
        if name == "schemas.table_names":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        quoted += [f"{path.relative_to(REPO)}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
                   if isinstance(n, ast.Constant) and n.value in names and id(n) not in docstrings]
    assert quoted == []
