"""The configuration's shape: the ``[server]``, ``[jobs]``, ``[ui]`` and ``[models.NAME]`` tables.

Runs in the front process. :func:`watchkeeper.config_loading.load_config` reads the TOML
file and the ``WK_*`` environment once at start-up and validates them into a frozen
:class:`Config`, which is then passed around as a plain value (workers receive what they
need of their :class:`ModelConfig`, never the file). Each field's default, bounds and
description live here; ``docs/configuration.md`` is generated from them
(``scripts/gen_config_doc.py``). Nothing here imports a model: ``app`` is checked for its
shape only.

``Config.source`` records where the configuration came from (the file path or
``"built-in"``); it is an ordinary field, so two configs from different files compare unequal
even with the same settings (compare ``.server`` and ``.models`` to ask "same settings?").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
)

__all__ = [
    "BUILTIN_APPS",
    "BUILTIN_SOURCE",
    "DEFAULT_CACHE_DIR",
    "MODEL_NAME_PATTERN",
    "Config",
    "JobsConfig",
    "ModelConfig",
    "ServerConfig",
    "UiConfig",
]

#: ``server.cache_dir`` when unset (``~`` is expanded where it is used).
DEFAULT_CACHE_DIR = "~/.cache/watchkeeper"

#: Model name -> import path of its class: what ``watchkeeper serve`` serves with no config.
#: (Strings only: the front never imports the app modules, ``watchkeeper.apps``.)
BUILTIN_APPS: dict[str, str] = {
    "cartoon": "watchkeeper.apps.cartoon:Cartoon",
    "embed": "watchkeeper.apps.embed:Embed",
    "entailment": "watchkeeper.apps.entailment:Entailment",
    "img2video": "watchkeeper.apps.img2video:Img2Video",
}

#: What a model name (the ``NAME`` of ``[models.NAME]``, and the URL path segment) must match.
MODEL_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
#: ``Config.source`` when no file was given.
BUILTIN_SOURCE = "built-in"

_APP_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$", re.ASCII)
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$", re.ASCII)

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
        default_factory=lambda: Path(DEFAULT_CACHE_DIR).expanduser(),
        description="The model cache: the files models declare (weights) are copied and "
        "checked in `cache_dir/models/NAME/`, shared by all workers; `~` is expanded. "
        "`watchkeeper models list` shows them.",
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
    max_json_values: StrictInt = Field(
        default=1_000_000,
        ge=1,
        description="Most JSON values (objects, arrays, strings, numbers...) one JSON body or "
        "form field may hold (more: 413); bounds the front's work per body, as building each "
        "value costs far more than its bytes. Send large arrays as a file or base64 instead.",
    )
    client_header_timeout_s: StrictFloat = Field(
        default=10.0,
        gt=0,
        description="Longest a client may take to send a request's head (request line and "
        "headers), from the connection's opening or the request's first byte: then 408 and "
        "the connection is closed (closed without an answer if nothing was sent).",
    )
    client_body_timeout_s: StrictFloat = Field(
        default=30.0,
        gt=0,
        description="Longest a client may take to send a request's body, from the end of its "
        "head, extended by one second for every `client_body_min_kib_per_s` KiB received: then "
        "408 and the connection is closed.",
    )
    client_body_min_kib_per_s: StrictFloat = Field(
        default=64.0,
        gt=0,
        description="Slowest upload rate (KiB/s) that extends `client_body_timeout_s`: a large "
        "body sent at this rate or faster is never cut off; a trickle is.",
    )
    keep_alive_timeout_s: StrictFloat = Field(
        default=5.0,
        gt=0,
        description="How long an idle connection is kept open between requests.",
    )
    max_head_kib: StrictInt = Field(
        default=16,
        ge=1,
        le=1024,
        description="Largest request head (request line and headers), in KiB: larger gets 431 "
        "and the connection is closed.",
    )
    max_connections: StrictInt = Field(
        default=1000,
        ge=1,
        description="Most client connections open at once. Past it, idle connections (between "
        "requests, or still sending a head) are closed, oldest first; if none is idle, the new "
        "connection's requests get 503 + Retry-After, except the health probes (`/livez`, "
        "`/readyz`, `/health/simple`), which are answered. Keep it under the process's "
        "open-files limit (`ulimit -n`), which the server raises to fit when it can.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="JSON file of API keys (salted hashes; made with `watchkeeper keys add`). "
        "Unset: no keys, every caller is one anonymous owner, and the server serves loopback "
        "only unless `allow_anonymous`. See docs/security.md.",
    )
    allow_anonymous: bool = Field(
        default=False,
        description="Serve a non-loopback `host` without API keys (logged as a warning at "
        "start). Off: such a server refuses to start.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names clients may use (the `Host` header), on top of `host`, "
        "`localhost`, `127.0.0.1` and `::1`; others get 400 (DNS rebinding). `*`: any.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins (e.g. `https://app.example.com`) whose pages may call the "
        "API: they get CORS headers; a state-changing request from any other origin gets 403.",
    )
    default_requests_per_s: StrictFloat | None = Field(
        default=None, gt=0,
        description="Requests a second per key, for keys without their own rate (429 + "
        "Retry-After beyond). Unset: no limit.",
    )
    default_max_queued_jobs: StrictInt = Field(
        default=1000, ge=1,
        description="Jobs a key (or the anonymous owner) may have queued or running at once, "
        "for keys without their own limit (429 + Retry-After beyond).",
    )
    default_max_result_mb: StrictFloat = Field(
        default=10240.0, gt=0,
        description="MiB of stored job results a key may hold, for keys without their own "
        "limit (submits get 429 beyond, until results expire).",
    )

    @field_validator("data_dir", "cache_dir", "api_keys_file")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()


class JobsConfig(_Frozen):
    """The ``[jobs]`` table: durable jobs (``POST /v1/models/NAME/jobs``) and their results."""

    max_attempts: StrictInt = Field(
        default=3, ge=1, le=100,
        description="Runs a job gets: a run ended by a worker's death or a server's stop is "
        "retried until the job has run this many times, then the job fails with the reason.",
    )
    timeout_s: StrictFloat = Field(
        default=3600.0, gt=0,
        description="Longest one run of a job may take (queued or running); then its worker "
        "is killed and the job fails with `deadline_exceeded`.",
    )
    result_ttl_h: StrictFloat = Field(
        default=24.0, gt=0,
        description="Hours a finished job and its result files are kept; then both are deleted.",
    )
    min_free_disk_mb: StrictFloat = Field(
        default=512.0, ge=0,
        description="Free space (MiB) the data dir must have for a new job to be accepted; "
        "below it, submits get 503 rather than jobs failing half way.",
    )
    cancel_grace_s: StrictFloat = Field(
        default=1.0, ge=0,
        description="How long a cancelled running job's model has to stop by itself (at its "
        "next progress report) before its worker is killed and replaced.",
    )
    max_streams_per_job: StrictInt = Field(
        default=100, ge=1,
        description="Most event streams (`GET /v1/jobs/ID/events`) open on one job; more get "
        "503 + Retry-After.",
    )
    max_streams: StrictInt = Field(
        default=500, ge=1,
        description="Most event streams open at once, over all jobs; more get 503 + Retry-After.",
    )
    store_write_timeout_s: StrictFloat = Field(
        default=5.0, gt=0, le=600,
        description="Longest a write to the job store waits for the database's write lock "
        "(held by another process, e.g. a sqlite3 shell) before it fails; the store is then "
        "reported failing in `/health` and submits get 503 until a check finds it writable.",
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
    options: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="The `[models.NAME.options]` table: settings for the model class itself "
        "(e.g. `weights = \"/path/to/other.safetensors\"`), checked by the model's own "
        "`Options` class when a worker loads it; a bad key fails the load at once and "
        "`/health` names it (`watchkeeper models check` checks them without a server).",
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
    max_requests: StrictInt = Field(
        default=0,
        ge=0,
        description="Requests a worker serves before it is recycled (a fresh one started "
        "first, so no capacity is lost), as gunicorn's `max_requests`. 0: off.",
    )
    max_requests_jitter: StrictInt = Field(
        default=0,
        ge=0,
        description="A random 0..N added to `max_requests` per worker, so replicas started "
        "together do not recycle together.",
    )
    recycle_rss_growth_mb: StrictFloat = Field(
        default=1024.0, ge=0,
        description="Recycle a worker whose resident memory grew more than this (MiB) above "
        "its own baseline (read after its first 20 requests): a leak, replaced before the "
        "kernel's OOM killer ends it mid-request. 0: off.",
    )
    recycle_device_growth_mb: StrictFloat = Field(
        default=0.0, ge=0,
        description="Recycle a worker whose device memory (CUDA: allocator reserved) grew more "
        "than this (MiB) above its baseline, read as RSS's. 0: off, the default: it also grows "
        "with the largest request yet, and the successor needs a second copy of the model on "
        "the device. Set it above the largest request's peak, with room for that copy. CPU: none.",
    )
    recycle_latency_factor: StrictFloat | None = Field(
        default=None, gt=1,
        description="Recycle a worker whose time per request, for one params shape and batch "
        "size, drifted past this factor of its own early baseline for them. Unset: off "
        "(latency also drifts with load and neighbours: for models known to slow down as they age).",
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


class UiConfig(_Frozen):
    """The ``[ui]`` table: the web UI, a process of its own that the front starts and watches."""

    enabled: bool = Field(default=False, description="Serve the web UI (`watchkeeper serve --ui` turns "
                          "it on too). Off: no UI process at all.")
    host: str | None = Field(default=None, description="Address the UI listens on; unset: `server.host`.")
    port: StrictInt = Field(default=7860, ge=1, le=65535,
                            description="TCP port of the UI (`GET /ui` on the API redirects there).")
    check_interval_s: StrictFloat = Field(default=2.0, gt=0, description="Seconds between the front's "
                                          "liveness checks of the UI (`GET /livez`).")
    check_timeout_s: StrictFloat = Field(default=2.0, gt=0, description="Longest one liveness check may "
                                         "take; a slower answer counts as a failed check.")
    check_failures: StrictInt = Field(default=3, ge=1, le=100, description="Failed checks in a row "
                                      "(hung, stopped) after which the UI is killed and started again.")
    start_timeout_s: StrictFloat = Field(default=60.0, gt=0, description="Longest a new UI process may "
                                         "take to pass its first check; then it is killed and started again.")
    restart_backoff_max_s: StrictFloat = Field(default=30.0, gt=0, description="Longest wait between "
                                               "restarts of a crashing UI (from 0.5 s, doubling).")


class Config(_Frozen):
    """The whole configuration: ``server``, ``jobs``, ``models`` by name, and where it came from."""

    server: ServerConfig = Field(default_factory=lambda: ServerConfig())
    jobs: JobsConfig = Field(default_factory=lambda: JobsConfig())
    ui: UiConfig = Field(default_factory=lambda: UiConfig())
    models: dict[ModelName, ModelConfig] = Field(
        min_length=1, description="The models served, by name (the URL path segment)."
    )
    source: str = Field(
        default=BUILTIN_SOURCE, description="The configuration file's path, or `built-in`."
    )
