"""The docs against the code: generated sections are fresh, links resolve, figures are sourced.

- docs/architecture.md's package map is what ``scripts/gen_architecture_doc.py`` makes of
  the tree now, so a new, renamed or removed module fails here until the script is run;
- docs/configuration.md's key tables are what ``scripts/gen_config_doc.py`` makes of the
  config's fields, with types in words (never a Python repr);
- every relative link in README.md and docs/ names a file that exists, and a heading in it;
- every figure in the README's benchmark summary appears in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Literal

import pytest

from watchkeeper.config import JobsConfig, ModelConfig, ServerConfig
from watchkeeper.config_loading import load_config

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- architecture


def test_architecture_package_map_is_up_to_date() -> None:
    doc = (DOCS / "architecture.md").read_text(encoding="utf-8")
    assert script("gen_architecture_doc").render_doc(doc) == doc, (
        "docs/architecture.md's package map differs from the modules under src/watchkeeper: "
        "run python scripts/gen_architecture_doc.py"
    )


def test_architecture_map_names_every_module() -> None:
    doc = (DOCS / "architecture.md").read_text(encoding="utf-8")
    src = ROOT / "src" / "watchkeeper"
    for path in src.rglob("*.py"):
        relative = path.relative_to(src).as_posix()
        assert f"(../src/watchkeeper/{relative})" in doc, relative


def test_the_map_follows_a_new_module(tmp_path: Path) -> None:
    gen = script("gen_architecture_doc")
    (tmp_path / "__init__.py").write_text('"""The package."""\n')
    (tmp_path / "front").mkdir()
    (tmp_path / "front" / "__init__.py").write_text('"""Front process."""\n')
    (tmp_path / "front" / "gate.py").write_text('"""The gate: ``open`` and\nclose it.\n\nMore."""\n')
    row = "| [`front/gate.py`](../src/watchkeeper/front/gate.py) | front | The gate: `open` and close it. |"
    assert row in gen.render_map(tmp_path)


def test_the_map_refuses_a_module_without_docstring_or_process(tmp_path: Path) -> None:
    gen = script("gen_architecture_doc")
    (tmp_path / "__init__.py").write_text('"""The package."""\n')
    (tmp_path / "front").mkdir()
    (tmp_path / "front" / "__init__.py").write_text("")
    with pytest.raises(SystemExit, match="has no docstring"):
        gen.render_map(tmp_path)
    (tmp_path / "front" / "__init__.py").write_text('"""Front process."""\n')
    (tmp_path / "elsewhere.py").write_text('"""Somewhere."""\n')
    with pytest.raises(SystemExit, match="no process for the top-level module elsewhere.py"):
        gen.render_map(tmp_path)


# --------------------------------------------------------------------------- configuration


CONFIG_DOC = DOCS / "configuration.md"


def test_config_doc_tables_are_up_to_date() -> None:
    doc = CONFIG_DOC.read_text(encoding="utf-8")
    assert script("gen_config_doc").render_doc(doc) == doc, "run: python scripts/gen_config_doc.py"


@pytest.mark.parametrize("model", [ServerConfig, JobsConfig, ModelConfig])
def test_config_doc_describes_every_field(
    model: type[ServerConfig | JobsConfig | ModelConfig],
) -> None:
    doc = CONFIG_DOC.read_text(encoding="utf-8")
    for name, field in model.model_fields.items():
        assert f"| `{name}` |" in doc, f"docs/configuration.md does not describe {name}"
        assert field.description, f"{model.__name__}.{name} has no description"


def test_config_doc_types_are_words() -> None:
    doc = CONFIG_DOC.read_text(encoding="utf-8")
    for python in ("typing.", "<class", "Annotated", "Optional", "Strict", "`None`", "`True`"):
        assert python not in doc, python
    assert "| `max_batch_size` | integer or unset | unset |" in doc
    assert "| `memory_admission` | boolean | `true` |" in doc


def test_config_types_in_words() -> None:
    spelled = script("gen_config_doc")._spelled
    assert spelled(int | None, "x") == "integer or unset"
    assert spelled(Literal["a", "b"], "x") == "one of: `a`, `b`"
    assert spelled(list[Path], "x") == "list of paths"
    assert spelled(int | str, "x") == "integer or string"
    with pytest.raises(SystemExit, match="no words for the type"):
        spelled(complex, "x")


def test_config_doc_example_loads(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", CONFIG_DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "docs/configuration.md has no toml example"
    for block in blocks:
        path = tmp_path / "watchkeeper.toml"
        path.write_text(block, encoding="utf-8")
        config = load_config(path, {})
        assert config.models["chaos"].app == "watchkeeper.apps.chaos:Chaos"
        assert config.models["chaos"].timeout_s < ModelConfig(app="watchkeeper.apps.chaos:Chaos").timeout_s
        assert "cartoon" in config.models


# --------------------------------------------------------------------------- links and figures


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, '-' for ' '."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE):
        found.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return found


def links(page: Path) -> list[str]:
    """The page's relative link targets, outside code blocks."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    for target in links(page):
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.name}: {target}: no such file"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{page.name}: {target}: no such heading"


def test_readme_benchmark_figures_come_from_the_benchmarks_page() -> None:
    readme = README.read_text(encoding="utf-8")
    summary = readme[readme.index("## Benchmarks") :]
    rows = [line for line in summary.splitlines() if line.startswith("| [")]
    assert len(rows) >= 8
    measured = {line.split(" | ")[1] for line in rows}
    numbers = set(re.findall(r"\d+(?:\.\d+)?", (DOCS / "benchmarks.md").read_text(encoding="utf-8")))
    for cell in measured:
        for number in re.findall(r"\d+(?:\.\d+)?", cell):
            assert number in numbers, f"README's {cell!r}: {number} is not in docs/benchmarks.md"


def test_docs_say_what_they_mean_not_which_source_document() -> None:
    """The project's background articles are not shipped: name what a figure is, not where."""
    places = [README, *DOCS.glob("*.md"), *(ROOT / "src").rglob("*.py"),
              *(ROOT / "bench").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]
    for path in places:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"source documents?\b|\bdocument 00\d", text, re.IGNORECASE), path
