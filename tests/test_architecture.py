"""The package's imports run one way (docs/architecture.md): no module imports, directly or through others,
a module that imports it back. Read from the source with ``ast``, so a lazy import inside a function counts
too; ``from . import x`` counts as an import of the submodule ``x`` when there is one."""

from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# kernels/ is installed as lqae_tokenizer.kernels (setup.cfg package_dir).
PACKAGES = {"lqae_tokenizer": ROOT / "lqae_tokenizer", "lqae_tokenizer.kernels": ROOT / "kernels"}


def module_files() -> dict[str, Path]:
    """Dotted module name -> its source file, for every module of the installed package."""
    found = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((prefix, *parts))] = path
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` (module ``name``) imports, resolving relative imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known]
            # `from . import x` names submodules; `from .m import f` names module m.
            candidates = submodules if len(submodules) == len(node.names) else [module, *submodules]
        else:
            continue
        found.update(c for c in candidates if c in known and c != name)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_cycle_finder_sees_a_circle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_circle():
    files = module_files()
    assert "lqae_tokenizer.kernels.reference" in files and "lqae_tokenizer.tokenizer" in files
    graph = {name: imported_modules(name, path, set(files)) for name, path in files.items()}
    assert "lqae_tokenizer.search" in graph["lqae_tokenizer.quantizer"]  # the reader resolves relative imports
    assert import_cycles(graph) == []


def test_the_kernels_folder_never_shadows_the_top_level_kernels_package(tmp_path):
    """transformers >= 5.25 imports Hugging Face's ``kernels``; run from the repository root, our folder
    must never be what ``import kernels`` gives (docs/architecture.md): it steps aside for the package
    installed elsewhere, or fails as if it were not there."""
    import subprocess
    import sys

    site = tmp_path / "site"
    (site / "kernels").mkdir(parents=True)
    (site / "kernels" / "__init__.py").write_text("WHO = 'the installed kernels package'\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "import kernels, lqae_tokenizer.kernels.reference as r; print(kernels.WHO); print(r.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    who, reference = out.stdout.splitlines()
    assert who == "the installed kernels package"
    assert Path(reference) == ROOT / "kernels" / "reference.py" or "site-packages" in reference
    probe = "import kernels; print(getattr(kernels, '__file__', None), sorted(k for k in vars(kernels) if k[0] != '_'))"
    absent = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    installed = subprocess.run([sys.executable, "-c", "import importlib.metadata as m; m.version('kernels')"],
                               cwd=tmp_path, capture_output=True, timeout=120).returncode == 0
    assert absent.returncode == 0, absent.stderr[-2000:]
    if not installed:  # no Hugging Face kernels here: an empty namespace-like module, none of our code
        assert absent.stdout.strip() == "None []"  # no file, none of our names
    # transformers' own availability check (which imports the package when it has no metadata) agrees.
    check = ("from transformers.utils.import_utils import is_kernels_available as a; "
             "import lqae_tokenizer.kernels.reference; print(a())")
    seen = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert seen.returncode == 0, seen.stderr[-2000:]
    assert seen.stdout.strip() == str(installed)
