"""Loading the configuration: the TOML file, then the ``WK_*`` environment, validated together.

Runs in the front process, once: ``watchkeeper serve`` calls :func:`load_config` before it
starts the server, and gets the frozen :class:`~watchkeeper.config.Config` whose tables and
fields are declared in :mod:`watchkeeper.config`. Nothing here is read again while serving.

Where values come from, later winning over earlier:

1. the defaults of the fields (and, with no file, one model per built-in app);
2. the TOML file (top-level tables ``[server]``, ``[jobs]``, ``[ui]`` and ``[models.NAME]``);
3. environment variables: ``WK_SERVER__PORT=9000`` sets ``server.port`` (the rest of the
   name split on ``__`` and lower-cased); ``server`` may be left out (``WK_PORT=9000``);
   ``WK_MODELS__CARTOON__TIMEOUT_S=5`` sets ``models.cartoon.timeout_s``. Values are read
   as TOML values when they parse (``5``, ``1.5``, ``true``, ``"x"``), otherwise as text;
   keys that take text (``host``, ``app``, ``device``, ...) always get text.

Every problem found (unknown key, wrong type, out of bounds, a ``WK_*`` variable that names
no key) is collected and reported together in one :class:`~watchkeeper.errors.ConfigError`,
one line each: ``<source>: <dotted.key>: <what is wrong and what is allowed>``, where the
source is the file path, the environment variable, or ``built-in``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from watchkeeper.config import (
    BUILTIN_APPS,
    BUILTIN_SOURCE,
    MODEL_NAME_PATTERN,
    Config,
    JobsConfig,
    ModelConfig,
    ServerConfig,
    UiConfig,
)
from watchkeeper.errors import ConfigError

__all__ = ["ENV_PREFIX", "NON_CONFIG_ENV", "load_config", "resolve_config_path"]

#: Environment variables starting with this prefix are configuration overrides.
ENV_PREFIX = "WK_"
#: ``WK_*`` variables that are not configuration keys: ``WK_CONFIG`` names the file, the
#: others are the built-in apps' own settings (a test finds every one the apps read).
NON_CONFIG_ENV: frozenset[str] = frozenset(
    {"WK_CONFIG", "WK_CHAOS_SETUP_DELAY_S", "WK_CHAOS_PROBE_FAIL_FILE", "WK_CHAOS_SETUP_FAIL_FILE",
     "WK_EMBED_MODEL_DIR"}
)

_TOP_LEVEL_KEYS = ("jobs", "models", "server", "ui")
_TEXT_KEYS = frozenset({"host", "data_dir", "cache_dir", "log_level", "app", "device"})


# --------------------------------------------------------------------------- loading


def resolve_config_path(
    cli_path: Path | str | None, env: Mapping[str, str] | None = None
) -> Path | None:
    """The file to load: ``--config`` if given, else ``$WK_CONFIG`` if set and non-empty."""
    if cli_path is not None and str(cli_path) != "":
        return Path(cli_path)
    value = (os.environ if env is None else env).get("WK_CONFIG", "")
    return Path(value) if value else None


def load_config(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the file (or the built-in apps), apply ``WK_*`` overrides, and validate.

    Raises :class:`ConfigError` listing every problem found, one per line.
    """
    env = os.environ if env is None else env
    source = BUILTIN_SOURCE if path is None else str(path)
    raw = _builtin_raw() if path is None else _read_toml(path)
    errors = _check_top_level(raw, source)
    origins: list[tuple[tuple[str, ...], str]] = []
    errors += _apply_env(raw, env, origins)
    config, validation_errors = _validate(raw, source, origins)
    errors += validation_errors
    if errors or config is None:
        raise _config_error(errors)
    return config


def _builtin_raw() -> dict[str, Any]:
    return {"models": {name: {"app": app} for name, app in BUILTIN_APPS.items()}}


def _read_toml(path: Path | str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise _config_error([f"{path}: no such configuration file"]) from None
    except OSError as exc:
        raise _config_error([f"{path}: cannot read the file: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise _config_error([f"{path}: invalid TOML: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise _config_error([f"{path}: invalid TOML: not UTF-8 ({exc.reason})"]) from None


def _check_top_level(raw: dict[str, Any], source: str) -> list[str]:
    allowed = ", ".join(_TOP_LEVEL_KEYS)
    return [
        f"{source}: {key}: unknown key (allowed: {allowed})"
        for key in raw
        if key not in _TOP_LEVEL_KEYS
    ]


def _config_error(errors: list[str]) -> ConfigError:
    return ConfigError(
        "\n".join(errors),
        suggestion="Fix the keys named above; docs/configuration.md lists every key.",
        details={"errors": errors},
    )


# --------------------------------------------------------------------------- environment


def _apply_env(
    raw: dict[str, Any], env: Mapping[str, str], origins: list[tuple[tuple[str, ...], str]]
) -> list[str]:
    """Set every ``WK_*`` override into ``raw``; record which variable set which key path."""
    errors: list[str] = []
    seen: dict[tuple[str, ...], str] = {}
    for var, key_path, error in _env_overrides(env):
        if error:
            errors.append(f"{var}: {error}")
        elif key_path in seen:
            errors.append(f"{var}: {_dotted(key_path)}: also set by {seen[key_path]}")
        else:
            seen[key_path] = var
            value = _parse_env_value(env[var], text_key=key_path[-1] in _TEXT_KEYS)
            errors += _set_path(raw, key_path, value, var, origins)
    return errors


def _env_overrides(env: Mapping[str, str]) -> list[tuple[str, tuple[str, ...], str]]:
    """(variable, key path, error) for each configuration variable, shortest paths first."""
    found = []
    for var in sorted(env):
        if var.startswith(ENV_PREFIX) and var not in NON_CONFIG_ENV:
            key_path, error = _env_key_path(var)
            found.append((var, key_path, error))
    return sorted(found, key=lambda item: len(item[1]))


def _env_key_path(var: str) -> tuple[tuple[str, ...], str]:
    parts = var[len(ENV_PREFIX) :].lower().split("__")
    if not all(parts):
        return (), "malformed name (use WK_SECTION__KEY, e.g. WK_SERVER__PORT or WK_PORT)"
    if parts[0] in _TOP_LEVEL_KEYS:
        return tuple(parts), ""
    if parts[0] in ServerConfig.model_fields:
        return ("server", *parts), ""
    server_keys = ", ".join(sorted(ServerConfig.model_fields))
    allowed = f"server, models, or a server key without its section: {server_keys}"
    return (), f"{_dotted(tuple(parts))}: unknown key (allowed: {allowed})"


def _parse_env_value(text: str, *, text_key: bool) -> Any:
    """The TOML value ``text`` spells, else ``text`` itself; text keys get text only."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if isinstance(value, (date, datetime, time)) or (text_key and not isinstance(value, str)):
        return text
    return value


def _set_path(
    raw: dict[str, Any],
    key_path: tuple[str, ...],
    value: Any,
    var: str,
    origins: list[tuple[tuple[str, ...], str]],
) -> list[str]:
    table = raw
    for depth, key in enumerate(key_path[:-1], start=1):
        if key not in table:
            table[key] = {}
            origins.append((key_path[:depth], var))
        table = table[key]
        if not isinstance(table, dict):
            where = _dotted(key_path[:depth])
            return [f"{var}: {_dotted(key_path)}: cannot be set, {where} is not a table"]
    table[key_path[-1]] = value
    origins.append((key_path, var))
    return []


# --------------------------------------------------------------------------- validation


def _validate(
    raw: dict[str, Any], source: str, origins: list[tuple[tuple[str, ...], str]]
) -> tuple[Config | None, list[str]]:
    body = {key: value for key, value in raw.items() if key in _TOP_LEVEL_KEYS}
    if "models" not in body:
        return None, [f"{source}: models: required: at least one [models.NAME] table"]
    try:
        return Config.model_validate({**body, "source": source}), []
    except ValidationError as exc:
        return None, [_describe(err, source, origins) for err in exc.errors(include_url=False)]


def _describe(err: ErrorDetails, source: str, origins: list[tuple[tuple[str, ...], str]]) -> str:
    loc = tuple(str(part) for part in err["loc"])
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
    return f"{_source_of(loc, source, origins)}: {_dotted(loc)}: {_problem(err, loc)}"


def _source_of(
    loc: tuple[str, ...], source: str, origins: list[tuple[tuple[str, ...], str]]
) -> str:
    """The variable that set ``loc`` (or a table above it, or a key below it), else ``source``."""
    above = [(len(path), var) for path, var in origins if loc[: len(path)] == path]
    if above:
        return max(above)[1]
    below = [var for path, var in origins if path[: len(loc)] == loc]
    return below[0] if below else source


def _problem(err: ErrorDetails, loc: tuple[str, ...]) -> str:
    kind, ctx, got = err["type"], err.get("ctx", {}), _got(err)
    if kind == "extra_forbidden":
        return f"unknown key (allowed: {', '.join(_allowed_keys(loc[:-1]))})"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch" and err["loc"][-1] == "[key]":
        return f"model name must match {MODEL_NAME_PATTERN}{got}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "too_short" and loc == ("models",):
        return "required: at least one [models.NAME] table"
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        return f"must be {op} {_number(ctx[key])}{got}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}{got}"
    return _TYPE_MESSAGES.get(kind, err["msg"][:1].lower() + err["msg"][1:]) + got


_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}

_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "path_type": "must be a path (a string)",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dict_type": "must be a table",
}


def _got(err: ErrorDetails) -> str:
    value = err.get("input")
    if isinstance(value, dict):
        return " (got a table)"
    return f" (got {value!r})"


def _number(value: Any) -> Any:
    """``0.0`` as ``0``: pydantic reports float bounds as floats even when written as ints."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _allowed_keys(table: tuple[str, ...]) -> list[str]:
    if table == ():
        return list(_TOP_LEVEL_KEYS)
    if table == ("server",):
        return sorted(ServerConfig.model_fields)
    if table == ("jobs",):
        return sorted(JobsConfig.model_fields)
    if table == ("ui",):
        return sorted(UiConfig.model_fields)
    return sorted(ModelConfig.model_fields)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)
