"""Regenerate the package map of docs/architecture.md from the modules under src/watchkeeper.

    python scripts/gen_architecture_doc.py           # rewrite the map in place
    python scripts/gen_architecture_doc.py --check   # exit 1 if the committed map is stale

Only the text between ``<!-- BEGIN GENERATED: package map -->`` and
``<!-- END GENERATED: package map -->`` is replaced; the rest of the page is written by hand.
Each module's line is the summary of its docstring (its first paragraph); the process it runs
in is its package's process role, from ``PACKAGE_PROCESSES``, unless ``MODULE_PROCESSES``
names it. ``tests/unit/test_docs.py`` runs the check, so adding, renaming or removing a
module, or changing a module's summary, must be followed by running this script. A module
with no docstring, or one in a package (or at the top level) this script has no process for,
stops it with a message saying what to add.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

__all__ = [
    "DOC_PATH",
    "MODULE_PROCESSES",
    "PACKAGE_PROCESSES",
    "SRC",
    "main",
    "render_doc",
    "render_map",
]

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "watchkeeper"
DOC_PATH = ROOT / "docs" / "architecture.md"

#: The process each package's modules run in: one package per process role.
PACKAGE_PROCESSES = {
    "protocol": "front, worker, template",
    "worker": "worker, template",
    "supervision": "front",
    "scheduling": "front",
    "front": "front",
    "http": "front",
    "jobs": "front",
    "cli": "CLI",
    "apps": "worker, template",
    "ui": "UI",
}
#: Modules that run somewhere else than their package says, and the top-level modules.
MODULE_PROCESSES = {
    "__init__.py": "every process",
    "contract.py": "worker, template",
    "errors.py": "every process",
    "config.py": "front",
    "config_loading.py": "front",
    "hosts.py": "front, UI",
    "logs.py": "every process",
    "model_cache.py": "worker, template, CLI",
    "cli/main.py": "front (`serve`), CLI (`check`)",
    "worker/__main__.py": "worker",
    "worker/loop.py": "worker",
    "worker/template.py": "template",
}

_BEGIN = "<!-- BEGIN GENERATED: package map -->\n"
_END = "<!-- END GENERATED: package map -->"
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc):`~?([^`]+)`")


def summary(path: Path) -> str:
    """The first paragraph of the module's docstring, on one line, in Markdown."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc:
        raise SystemExit(f"{_shown(path)} has no docstring: open it with one line on what it is "
                         "and a sentence on the process it runs in")
    text = " ".join(doc.split("\n\n")[0].split())
    text = _ROLE.sub(lambda match: f"`{match.group(1)}`", text).replace("``", "`")
    return text.replace("|", "\\|")


def process_of(relative: str) -> str:
    """The process the module at ``relative`` (``front/server.py``) runs in."""
    if relative in MODULE_PROCESSES:
        return MODULE_PROCESSES[relative]
    package = relative.partition("/")[0] if "/" in relative else ""
    if package in PACKAGE_PROCESSES:
        return PACKAGE_PROCESSES[package]
    name = f"package {package}/" if package else f"top-level module {relative}"
    raise SystemExit(f"no process for the {name}: add it to PACKAGE_PROCESSES or "
                     f"MODULE_PROCESSES in scripts/gen_architecture_doc.py")


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _row(path: Path, src: Path) -> str:
    relative = path.relative_to(src).as_posix()
    link = f"[`{relative}`](../src/watchkeeper/{relative})"
    return f"| {link} | {process_of(relative)} | {summary(path)} |"


def _table(paths: list[Path], src: Path) -> list[str]:
    return ["| module | runs in | what it is |", "|---|---|---|", *(_row(p, src) for p in paths)]


def _modules(directory: Path) -> list[Path]:
    """The directory's modules: ``__init__.py`` first, the rest by name."""
    return sorted(directory.glob("*.py"), key=lambda p: (p.name != "__init__.py", p.name))


def render_map(src: Path = SRC) -> str:
    """The package map: the top-level modules, then one table per package."""
    lines = ["### Top level (`src/watchkeeper/`)", "", *_table(_modules(src), src)]
    for package in sorted({p.parent for p in src.rglob("*.py")} - {src}):
        relative = package.relative_to(src).as_posix()
        if not (package / "__init__.py").exists():
            raise SystemExit(f"{_shown(package)} has modules but no __init__.py")
        process = process_of(f"{relative}/__init__.py")
        lines += ["", f"### `{relative}/` (runs in: {process})", "", *_table(_modules(package), src)]
    return "\n".join(lines)


def render_doc(text: str, src: Path = SRC) -> str:
    """``text`` with the generated package map replaced by the current one."""
    pattern = re.compile(re.escape(_BEGIN) + ".*?" + re.escape(_END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{DOC_PATH}: no generated block (between {_BEGIN.strip()} and {_END})")
    return pattern.sub(lambda _: _BEGIN + render_map(src) + "\n" + _END, text)


def main(argv: list[str]) -> int:
    current = DOC_PATH.read_text(encoding="utf-8")
    fresh = render_doc(current)
    if "--check" in argv:
        if fresh != current:
            print(f"{DOC_PATH} is stale: run python scripts/gen_architecture_doc.py",
                  file=sys.stderr)
            return 1
        return 0
    DOC_PATH.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
