"""The shape of the code: one way for imports, modules a reader can hold, an app that starts nothing when imported."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "resnet_hub"
MAX_MODULE_LINES = 600
MAX_APP_LINES = 150


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether the dotted ``name`` is a module or package of the repository (not a name inside one)."""
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").exists() or path.is_dir()


def imports_of(path: Path) -> set[str]:
    """The package modules ``path`` imports anywhere in it, inside functions too (they hide circles as well)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("resnet_hub")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("resnet_hub"):
                target = node.module
            else:
                continue
            for alias in node.names:  # `from . import atomic` names a module; `from .x import y` names a name in x
                found.add(f"{target}.{alias.name}" if is_module(f"{target}.{alias.name}") else target)
    return {m for m in found if m != name}


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: {m for m in imports_of(path) if m in modules} for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), and modules importing
    themselves."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_among_the_package_modules_counting_imports_inside_functions():
    graph = import_graph()
    # A subpackage's __init__ importing its own modules is how a package is made, not a circle through it.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    assert circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_model_imports_nothing_of_the_package_but_its_errors():
    assert import_graph()["resnet_hub.model"] <= {"resnet_hub.errors"}


def test_only_the_ui_imports_gradio():
    importers = [name for name, path in package_modules().items()
                 if not name.startswith("resnet_hub.ui") and any(
                     isinstance(n, (ast.Import, ast.ImportFrom)) and any(
                         (getattr(n, "module", None) or a.name).split(".")[0] == "gradio" for a in n.names)
                     for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))]
    assert importers == []


def test_no_module_is_longer_than_a_sitting_and_app_py_is_wiring():
    long = {name: n for name, path in package_modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}
    assert len((ROOT / "app.py").read_text(encoding="utf-8").splitlines()) <= MAX_APP_LINES


IMPORT_AND_LOOK = """
import json, sys, threading
sys.path.insert(0, sys.argv[1])
import app
print(json.dumps({"threads": sorted(t.name for t in threading.enumerate()), "tabs": len(app.demo.blocks)}))
"""


def test_importing_the_app_starts_no_thread_and_writes_no_file(tmp_path):
    """Offline, on an empty store: importing app.py builds the page and nothing else: no thread (no Hub check, no
    starter build, no conversion) and no file under the store, the Hugging Face home or the working directory."""
    home, hf_home, cwd, gradio_tmp = (tmp_path / d for d in ("home", "hf-home", "cwd", "gradio"))
    for folder in (home, hf_home, cwd):
        folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "GRADIO_", "RESNET_HUB_"))}
    # Gradio's own temporary folder is where it would copy example files; it is pointed away from the three.
    env.update(RESNET_HUB_HOME=str(home), HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_TEMP_DIR=str(gradio_tmp), MPLCONFIGDIR=str(tmp_path / "mpl"))
    out = subprocess.run([sys.executable, "-c", IMPORT_AND_LOOK, str(ROOT)], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["threads"] == ["MainThread"] and seen["tabs"] > 0
    written = [str(p) for folder in (home, hf_home, cwd) for p in folder.rglob("*")]
    assert written == []
