"""``watchkeeper models list`` and ``watchkeeper models check``: the configured models, their
options and the files they declare, as the model cache holds them.

Runs in the ``watchkeeper`` command's process, without a server. Unlike the front, it imports
each model's class (that is how it learns the files and checks the options), so it loads the
models' libraries; nothing is set up and no weights are read but to hash them. ``list``
exits 0 whatever it finds (2 when the configuration itself is refused); ``check`` exits 1
when any model's app cannot be imported, its options are invalid, or a file is missing or
does not match its digest. A file not yet in the cache but shipped with its package counts
as present: the first load copies it in.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from watchkeeper.errors import ConfigError

__all__ = ["ModelReport", "add_model_commands", "inspect_models"]

EXIT_OK, EXIT_PROBLEM, EXIT_CONFIG = 0, 1, 2


@dataclass
class ModelReport:
    """One configured model as the cache sees it."""

    name: str
    app: str
    folder: str
    problem: str | None = None  # the app or its options cannot be used
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None and all(f["ok"] for f in self.files)


def add_model_commands(commands: Any) -> None:
    """Register ``models list`` and ``models check`` on the top-level subparsers."""
    models = commands.add_parser("models", help="the configured models and their files in the cache")
    verbs = models.add_subparsers(required=True, metavar="VERB")
    for verb, text in (("list", "show each model, its files, sizes and whether they verify"),
                       ("check", "exit 1 when a model's app, options or files are not right")):
        sub = verbs.add_parser(verb, help=text)
        sub.add_argument("--config", help="TOML file (default: $WK_CONFIG, else the built-in apps)")
        sub.add_argument("--json", action="store_true", help="one JSON document, for machines")
        sub.set_defaults(run=_run, verb=verb)


def _run(args: argparse.Namespace) -> int:
    from watchkeeper.config_loading import load_config, resolve_config_path

    try:
        config = load_config(resolve_config_path(args.config))
    except ConfigError as exc:
        print(f"watchkeeper: configuration refused:\n{exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    reports = inspect_models(config.models, config.server.cache_dir)
    if args.json:
        print(json.dumps([{**asdict(r), "ok": r.ok} for r in reports], indent=1))
    else:
        _print(reports)
    if args.verb == "check":
        return EXIT_OK if all(r.ok for r in reports) else EXIT_PROBLEM
    return EXIT_OK


def inspect_models(models: dict[str, Any], cache_dir: Path) -> list[ModelReport]:
    """A report per configured model (``models``: name -> ModelConfig)."""
    return [_inspect(name, cfg.app, dict(cfg.options), cache_dir) for name, cfg in models.items()]


def _inspect(name: str, app: str, options: dict[str, Any], cache_dir: Path) -> ModelReport:
    from watchkeeper.contract import ModelFile
    from watchkeeper.model_cache import check_file, model_folder
    from watchkeeper.worker.loading import import_app, model_options

    folder = model_folder(cache_dir, name)
    report = ModelReport(name, app, str(folder))
    try:
        cls = import_app(app)
        declared = cls.files(model_options(cls, name, options))
    except ConfigError as exc:
        report.problem = exc.message
        return report
    except Exception as exc:  # the app cannot be imported: say so, go on with the others
        report.problem = f"the app cannot be imported: {type(exc).__name__}: {exc}"
        return report
    for file in declared:
        check, where = check_file(file, folder), "cache" if file.path is None else "path"
        if check.size is None and file.path is None and file.source is not None:
            check, where = check_file(ModelFile(file.name, file.sha256, path=file.source), folder), "package"
        report.files.append({"name": file.name, "path": str(check.path), "size": check.size,
                             "sha256": check.actual, "expected": check.expected, "from": where,
                             "ok": check.ok, "problem": check.problem})
    return report


def _print(reports: list[ModelReport]) -> None:
    for report in reports:
        state = "ok" if report.ok else "PROBLEM"
        print(f"{report.name}  ({report.app})  {state}")
        if report.problem:
            print(f"    {report.problem}")
        elif not report.files:
            print("    declares no files")
        for f in report.files:
            size = "missing" if f["size"] is None else _size(f["size"])
            verdict = ("verified" if f["expected"] else "not checked (no digest declared)") \
                if f["ok"] else f["problem"]
            source = {"cache": "", "path": " (used where it is)",
                      "package": " (in the package; copied into the cache at first load)"}[f["from"]]
            print(f"    {f['name']:<28} {size:>10}  {verdict}\n      {f['path']}{source}")


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
