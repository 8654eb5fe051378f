"""The configuration: one TOML file, every key overridable by a ``WK_*`` environment variable.

Runs in the front process; loaded once at start-up by :func:`load_config` and then passed
around as a frozen :class:`Config` (workers receive the :class:`ModelConfig` they need,
never the file). Nothing here imports a model: ``app`` is checked for its shape only.

Where values come from, later winning over earlier:

1. the defaults of the fields below (and, with no file, one model per built-in app);
2. the TOML file (top-level tables ``[server]``, ``[jobs]`` and ``[models.NAME]``);
3. environment variables: ``WK_SERVER__PORT=9000`` sets ``server.port`` (the rest of the
   name split on ``__`` and lower-cased); ``server`` may be left out (``WK_PORT=9000``);
   ``WK_MODELS__CARTOON__TIMEOUT_S=5`` sets ``models.cartoon.timeout_s``. Values are read
   as TOML values when they parse (``5``, ``1.5``, ``true``, ``"x"``), otherwise as text;
   keys that take text (``host``, ``app``, ``device``, ...) always get text.

Every problem found (unknown key, wrong type, out of bounds, a ``WK_*`` variable that names
no key) is collected and reported together in one :class:`~watchkeeper.errors.ConfigError`,
one line each: ``<source>: <dotted.key>: <what is wrong and what is allowed>``, where the
source is the file path, the environment variable, or ``built-in``.

``Config.source`` records where the configuration came from (the file path or
``"built-in"``); it is an ordinary field, so two configs from different files compare unequal
even with the same settings (compare ``.server`` and ``.models`` to ask "same settings?").
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails

from watchkeeper.errors import ConfigError

__all__ = [
    "BUILTIN_APPS",
    "BUILTIN_SOURCE",
    "ENV_PREFIX",
    "MODEL_NAME_PATTERN",
    "NON_CONFIG_ENV",
    "Config",
    "JobsConfig",
    "ModelConfig",
    "ServerConfig",
    "load_config",
    "resolve_config_path",
]

#: Model name -> import path of its class: what ``watchkeeper serve`` serves with no config.
#: (Strings only: the front never imports the app modules, ``watchkeeper.apps``.)
BUILTIN_APPS: dict[str, str] = {
    "cartoon": "watchkeeper.apps.cartoon:Cartoon",
    "embed": "watchkeeper.apps.embed:Embed",
    "img2video": "watchkeeper.apps.img2video:Img2Video",
}

#: Environment variables starting with this prefix are configuration overrides.
ENV_PREFIX = "WK_"
#: ``WK_*`` variables that are not configuration keys (``WK_CONFIG`` names the file).
NON_CONFIG_ENV: frozenset[str] = frozenset(
    {"WK_CONFIG", "WK_CHAOS_SETUP_DELAY_S", "WK_CHAOS_PROBE_FAIL_FILE"}
)
#: What a model name (the ``NAME`` of ``[models.NAME]``, and the URL path segment) must match.
MODEL_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
#: ``Config.source`` when no file was given.
BUILTIN_SOURCE = "built-in"

_APP_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$", re.ASCII)
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$", re.ASCII)
_TOP_LEVEL_KEYS = ("jobs", "models", "server")
_TEXT_KEYS = frozenset({"host", "data_dir", "cache_dir", "log_level", "app", "device"})

ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ServerConfig(_Frozen):
    """The ``[server]`` table: the HTTP listener, directories, shutdown and logging."""

    host: str = Field(default="127.0.0.1", description="Address the HTTP server listens on.")
    port: StrictInt = Field(
        default=8000, ge=1, le=65535, description="TCP port of the HTTP server."
    )
    data_dir: Path = Field(
        default_factory=lambda: Path("~/.local/share/watchkeeper").expanduser(),
        description="Directory for durable state (the job store, job results); `~` is expanded.",
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path("~/.cache/watchkeeper").expanduser(),
        description="Directory of downloaded model weights, shared by all workers; "
        "`~` is expanded.",
    )
    grace_period_s: StrictFloat = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM or SIGINT, how long accepted requests may run to completion; "
        "what is left then gets 503, and the workers are stopped.",
    )
    max_body_mb: StrictFloat = Field(
        default=32.0, gt=0, description="Largest request body accepted, in MiB (larger: 413)."
    )
    memory_budget_fraction: StrictFloat = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Share of each device's memory (GPU, or RAM) that requests may hold at "
        "once; a request that does not fit waits, is degraded or gets 503.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level of log records written."
    )

    @field_validator("data_dir", "cache_dir")
    @classmethod
    def _expand_user(cls, value: Path) -> Path:
        return value.expanduser()


class JobsConfig(_Frozen):
    """The ``[jobs]`` table: durable jobs (``POST /v1/models/NAME/jobs``) and their results."""

    max_attempts: StrictInt = Field(
        default=3,
        ge=1,
        le=100,
        description="Runs a job gets: a run ended by a worker's death or a server's stop is "
        "retried until the job has run this many times, then the job fails with the reason.",
    )
    timeout_s: StrictFloat = Field(
        default=3600.0,
        gt=0,
        description="Longest one run of a job may take (queued or running); then its worker "
        "is killed and the job fails with `deadline_exceeded`.",
    )
    result_ttl_h: StrictFloat = Field(
        default=24.0,
        gt=0,
        description="Hours a finished job and its result files are kept; then both are deleted.",
    )
    min_free_disk_mb: StrictFloat = Field(
        default=512.0,
        ge=0,
        description="Free space (MiB) the data dir must have for a new job to be accepted; "
        "below it, submits get 503 rather than jobs failing half way.",
    )
    cancel_grace_s: StrictFloat = Field(
        default=1.0,
        ge=0,
        description="How long a cancelled running job's model has to stop by itself (at its "
        "next progress report) before its worker is killed and replaced.",
    )


class ModelConfig(_Frozen):
    """One ``[models.NAME]`` table: which class to serve and the limits around it."""

    app: str = Field(
        description="Import path `module.path:ClassName` of the model class "
        "(checked for shape here, imported only in the worker)."
    )
    replicas: StrictInt = Field(
        default=1, ge=1, le=64, description="Number of worker processes serving this model."
    )
    device: str = Field(
        default="auto",
        description="Where the model runs: `auto` (CUDA if present, else CPU), `cpu`, "
        "`cuda` or `cuda:N`.",
    )
    timeout_s: StrictFloat = Field(
        default=30.0,
        gt=0,
        le=86400,
        description="Longest a request may take, queue wait included (504 after); "
        "a request's X-Request-Timeout header can only shorten it.",
    )
    max_queue: StrictInt = Field(
        default=64, ge=1, description="Requests waiting for a replica before new ones get 429."
    )
    heartbeat_timeout_s: StrictFloat = Field(
        default=10.0,
        gt=0,
        description="Longest a worker may go without a heartbeat while it is not running "
        "a request (a request is limited by its deadline) before it is killed and restarted.",
    )
    load_retries: StrictInt = Field(
        default=3,
        ge=1,
        description="Attempts to load (set up and warm up) the model in a new worker "
        "before the model is marked failed.",
    )
    load_timeout_s: StrictFloat = Field(
        default=300.0, gt=0, description="Longest one load attempt (setup plus warm-up) may take."
    )
    probe_interval_s: StrictFloat = Field(
        default=30.0,
        ge=0,
        description="Seconds between canary inferences of the deep health check "
        "(0 turns probing off).",
    )
    max_batch_size: StrictInt | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Most requests sent to a worker in one batch; unset: the model's own "
        "`max_batch_size` (a larger value is lowered to it).",
    )
    memory_limit_mb: StrictFloat | None = Field(
        default=None,
        gt=0,
        description="Hard cap on what each worker may allocate beyond its size after warm-up "
        "(RLIMIT_AS): past it, allocations fail with MemoryError instead of the kernel killing "
        "the process. Also each worker's memory budget for admission. Its workers get "
        "glibc's `MALLOC_MMAP_THRESHOLD_=131072` (so the cap and the measured peaks see real "
        "use; this costs speed on models that allocate large buffers) and `MALLOC_ARENA_MAX=1` "
        "(so a failed allocation does not reserve a new 64 MiB arena). Unset: no cap.",
    )
    memory_budget_mb: StrictFloat | None = Field(
        default=None,
        gt=0,
        description="Memory (MB) that this model's requests may hold at once on one device; "
        "unset: `server.memory_budget_fraction` of the device (of `memory_limit_mb` when set).",
    )
    memory_admission: bool = Field(
        default=True,
        description="Admit requests by their memory need (waiting, degrading or refusing with "
        "503 what does not fit); off: every request runs, and an out-of-memory error is a 503.",
    )
    device_memory_gb: StrictFloat | None = Field(
        default=None,
        gt=0,
        description="Device memory (GB) used to choose the model's parameter profile "
        "(its limits by hardware); unset: the GPU's memory, or the machine's RAM on CPU.",
    )
    fork_from_template: bool = Field(
        default=True,
        description="Load the model once in a template process and fork workers from it, "
        "so a replaced worker starts without reading its weights again (CPU only: GPU "
        "models are always spawned, as CUDA does not survive a fork).",
    )
    threads: StrictInt = Field(
        default=0,
        ge=0,
        le=256,
        description="CPU threads each worker's maths libraries may use (OMP_NUM_THREADS, "
        "torch); 0: the machine's cores divided by `replicas`.",
    )
    max_wait_ms: StrictFloat = Field(
        default=0.0,
        ge=0,
        description="Longest the first request of a batch waits for others to join it.",
    )
    refill_wait_ms: StrictFloat = Field(
        default=2.0,
        ge=0,
        description="After a worker answers a batch of N while M more are queued, fewer than "
        "N + M queued requests (at most a full batch) wait for the clients just answered to "
        "send again, each arrival waiting at most this long for the next (and the worker idle "
        "for at most a quarter of a batch's mean time), so steady traffic keeps forming full "
        "batches (only models that batch; never at concurrency 1). 0: off.",
    )
    quarantine_s: StrictFloat = Field(
        default=300.0,
        ge=0,
        description="How long an input that killed workers is refused (422) "
        "(0 turns quarantine off).",
    )
    restart_backoff_max_s: StrictFloat = Field(
        default=30.0,
        gt=0,
        description="Longest wait between restarts of a crashing worker "
        "(the back-off doubles up to this).",
    )

    @field_validator("app")
    @classmethod
    def _check_app(cls, value: str) -> str:
        if not _APP_RE.match(value):
            raise ValueError(f"must look like module.path:ClassName (got {value!r})")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N (got {value!r})")
        return value


class Config(_Frozen):
    """The whole configuration: ``server``, ``jobs``, ``models`` by name, and where it came from."""

    server: ServerConfig = Field(default_factory=lambda: ServerConfig())
    jobs: JobsConfig = Field(default_factory=lambda: JobsConfig())
    models: dict[ModelName, ModelConfig] = Field(
        min_length=1, description="The models served, by name (the URL path segment)."
    )
    source: str = Field(
        default=BUILTIN_SOURCE, description="The configuration file's path, or `built-in`."
    )


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
    return sorted(ModelConfig.model_fields)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)
