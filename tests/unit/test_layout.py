"""The package's walls, checked from outside: what each process role may import, no import
cycles, module size, and where HTTP statuses and metric labels are chosen.

The import walls are checked in a fresh interpreter (``sys.modules`` after the import), so
a forbidden import anywhere below an entry point fails the test, however indirect.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "watchkeeper"
PACKAGE = "watchkeeper"
MAX_MODULE_LINES = 450

#: Front-side entry points and the modules they may never load (model code and its libraries).
FRONT_ENTRY_POINTS = ("watchkeeper.front.server", "watchkeeper.cli.main", "watchkeeper.http.app")
FRONT_FORBIDDEN = ("watchkeeper.apps", "torch", "cv2", "PIL", "numpy", "av", "transformers")
#: Worker-side entry points and the modules they may never load (the web stack).
WORKER_ENTRY_POINTS = ("watchkeeper.worker.__main__", "watchkeeper.worker.template")
WORKER_FORBIDDEN = ("fastapi", "starlette", "uvicorn", "prometheus_client", "httpx")
#: The web UI is a client of the HTTP API: it loads none of the server's parts, nor a model.
UI_ENTRY_POINTS = ("watchkeeper.ui.__main__", "watchkeeper.ui.app")
UI_FORBIDDEN = ("watchkeeper.front", "watchkeeper.http", "watchkeeper.scheduling",
                "watchkeeper.supervision", "watchkeeper.worker", "watchkeeper.jobs",
                "watchkeeper.apps", "torch", "cv2", "av", "transformers")


def modules_loaded_by(module: str) -> list[str]:
    """Every module in ``sys.modules`` after importing ``module`` in a fresh interpreter."""
    code = (f"import importlib, json, sys; importlib.import_module({module!r}); "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def forbidden_in(loaded: list[str], forbidden: tuple[str, ...]) -> list[str]:
    """Which of ``forbidden`` (packages) were loaded."""
    return sorted(f for f in forbidden if any(m == f or m.startswith(f + ".") for m in loaded))


@pytest.mark.parametrize("entry", FRONT_ENTRY_POINTS)
def test_the_front_loads_no_model_code(entry: str) -> None:
    assert forbidden_in(modules_loaded_by(entry), FRONT_FORBIDDEN) == []


@pytest.mark.parametrize("entry", WORKER_ENTRY_POINTS)
def test_workers_load_no_web_stack(entry: str) -> None:
    assert forbidden_in(modules_loaded_by(entry), WORKER_FORBIDDEN) == []


@pytest.mark.parametrize("entry", UI_ENTRY_POINTS)
def test_the_ui_loads_only_a_client(entry: str) -> None:
    pytest.importorskip("gradio", reason="the web UI's extra (`ui`) is not installed")
    assert forbidden_in(modules_loaded_by(entry), UI_FORBIDDEN) == []


def test_the_wall_check_sees_a_forbidden_import() -> None:
    """The check itself can fail: the image helpers (worker side) load numpy and PIL."""
    seen = forbidden_in(modules_loaded_by("watchkeeper.worker.images"), FRONT_FORBIDDEN)
    assert seen == ["PIL", "numpy"]


# --- the import graph ----------------------------------------------------------------


def module_files() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module ``name`` imports: at the top, in functions, under TYPE_CHECKING
    (the project writes absolute imports only; ``test_imports_are_absolute`` holds it)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_imports_are_absolute() -> None:
    relative = [f"{path.relative_to(SRC)}:{node.lineno}" for path in module_files().values()
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom) and node.level]
    assert relative == []


def test_no_import_cycles() -> None:
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_is_too_long() -> None:
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


# --- where decisions are made ----------------------------------------------------------


def calls_outside(attribute: str, allowed: set[str]) -> list[str]:
    """``file:line`` of every call of ``<something>.<attribute>(...)`` outside ``allowed``."""
    hits = []
    for name, path in module_files().items():
        if name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == attribute):
                hits.append(f"{path.relative_to(SRC)}:{node.lineno}")
    return hits


def test_metric_labels_are_set_only_in_the_metrics_module() -> None:
    assert calls_outside("labels", {"watchkeeper.front.metrics"}) == []


#: Status codes the front answers with (http.errors.STATUS, 200 and 202).
HTTP_CODES = frozenset({200, 202, 400, 404, 405, 409, 413, 422, 429, 500, 502, 503, 504})


def status_literals(tree: ast.AST) -> list[int]:
    """Line numbers of HTTP status codes used as a decision: returned, compared, passed as
    ``status``/``status_code``, or given as a metric label (as an int or a string)."""
    def is_code(node: ast.AST | None) -> bool:
        return (isinstance(node, ast.Constant) and not isinstance(node.value, bool)
                and isinstance(node.value, int | str) and str(node.value).isdigit()
                and int(node.value) in HTTP_CODES)

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in ("status", "status_code"):
            candidates: list[ast.AST | None] = [node.value]
        elif isinstance(node, ast.Return):
            candidates = list(ast.walk(node.value)) if node.value is not None else []
        elif isinstance(node, ast.IfExp):
            candidates = [node.body, node.orelse]
        elif isinstance(node, ast.Compare):
            candidates = [node.left, *node.comparators]
        elif isinstance(node, ast.Call):
            candidates = list(node.args)
        else:
            continue
        lines += [c.lineno for c in candidates if is_code(c)]  # type: ignore[union-attr]
    return lines


def test_http_statuses_are_chosen_only_in_the_http_package() -> None:
    """Only ``watchkeeper.http`` turns outcomes into status codes (the CLI, a client, reads
    them; the metrics module declares the label values)."""
    exempt = ("watchkeeper.http", "watchkeeper.cli", "watchkeeper.ui", "watchkeeper.front.metrics")
    offenders = [f"{path.relative_to(SRC)}:{line}" for name, path in module_files().items()
                 if not name.startswith(exempt)
                 for line in status_literals(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_status_check_sees_a_status() -> None:
    tree = ast.parse("def f(ok):\n    return 200 if ok else 503\nx = dict(status_code=404)\ny = 200")
    assert sorted(set(status_literals(tree))) == [2, 3]


def test_unit_tests_mirror_the_packages() -> None:
    """``tests/unit/<package>/`` for each package's tests; no folder for a package that is gone."""
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__"}
    packages = {p.parent.name for p in SRC.glob("*/__init__.py")}
    assert folders <= packages
