"""Tests of watchkeeper.config and watchkeeper.config_loading: defaults, the TOML file,
WK_* overrides, error messages. (docs/configuration.md is checked in test_docs.py.)"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

import watchkeeper.config as config_module
import watchkeeper.config_loading as loading_module
from watchkeeper.config import BUILTIN_APPS, BUILTIN_SOURCE, Config, ModelConfig, ServerConfig
from watchkeeper.config_loading import NON_CONFIG_ENV, load_config, resolve_config_path
from watchkeeper.errors import ConfigError

CARTOON = "watchkeeper.apps.cartoon:Cartoon"
CHAOS = "watchkeeper.apps.chaos:Chaos"


def write(tmp_path: Path, text: str, name: str = "watchkeeper.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path | None, env: dict[str, str] | None = None) -> list[str]:
    """The lines of the ConfigError that loading must raise."""
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    lines = info.value.message.splitlines()
    assert lines == info.value.details["errors"]
    return lines


def only_error(path: Path | None, env: dict[str, str] | None = None) -> str:
    lines = errors_of(path, env)
    assert len(lines) == 1, lines
    return lines[0]


MINIMAL = f'[models.cartoon]\napp = "{CARTOON}"\n'


# --------------------------------------------------------------------------- defaults


def test_no_file_serves_every_builtin_app_with_defaults() -> None:
    config = load_config(None, {})
    assert config.source == BUILTIN_SOURCE
    assert set(config.models) == set(BUILTIN_APPS)
    for name, app in BUILTIN_APPS.items():
        assert config.models[name] == ModelConfig(app=app)
    assert config.server == ServerConfig()


def test_server_defaults() -> None:
    server = ServerConfig()
    assert (server.host, server.port, server.log_level) == ("127.0.0.1", 8000, "info")
    assert server.data_dir == Path.home() / ".local" / "share" / "watchkeeper"
    assert server.cache_dir == Path.home() / ".cache" / "watchkeeper"
    assert (server.grace_period_s, server.max_body_mb) == (30.0, 32.0)


def test_model_defaults() -> None:
    model = ModelConfig(app=CARTOON)
    expected = {
        "replicas": 1,
        "device": "auto",
        "timeout_s": 30.0,
        "max_queue": 64,
        "heartbeat_timeout_s": 10.0,
        "load_retries": 3,
        "load_timeout_s": 300.0,
        "probe_interval_s": 30.0,
        "max_batch_size": None,
        "memory_limit_mb": None,
        "memory_budget_mb": None,
        "memory_admission": True,
        "device_memory_gb": None,
        "options": {},
        "fork_from_template": True,
        "max_requests": 0,
        "max_requests_jitter": 0,
        "recycle_rss_growth_mb": 1024.0,
        "recycle_device_growth_mb": 0.0,
        "recycle_latency_factor": None,
        "threads": 0,
        "max_wait_ms": 0.0,
        "refill_wait_ms": 2.0,
        "quarantine_s": 300.0,
        "restart_backoff_max_s": 30.0,
    }
    assert model.model_dump(exclude={"app"}) == expected


def test_models_are_frozen_and_refuse_unknown_fields() -> None:
    model = ModelConfig(app=CARTOON)
    with pytest.raises(ValidationError):
        model.replicas = 2
    with pytest.raises(ValidationError):
        ModelConfig(app=CARTOON, replica=2)  # type: ignore[call-arg]


def test_default_env_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WK_PORT", "9123")
    assert load_config().server.port == 9123


# --------------------------------------------------------------------------- the file


def test_file_sets_server_and_models(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        [server]
        host = "0.0.0.0"
        port = 9000
        data_dir = "~/wk-data"
        cache_dir = "relative/cache"
        grace_period_s = 5
        log_level = "debug"

        [models.cartoon]
        app = "{CARTOON}"
        replicas = 2
        device = "cuda:1"

        [models.chaos]
        app = "{CHAOS}"
        timeout_s = 2.5
        device = "cpu"
        """,
    )
    config = load_config(path, {})
    assert config.source == str(path)
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 9000
    assert config.server.data_dir == Path.home() / "wk-data"
    assert config.server.cache_dir == Path("relative/cache")
    assert config.server.grace_period_s == 5.0
    assert isinstance(config.server.grace_period_s, float)
    assert config.server.log_level == "debug"
    assert list(config.models) == ["cartoon", "chaos"]
    assert config.models["cartoon"].replicas == 2
    assert config.models["cartoon"].device == "cuda:1"
    assert config.models["chaos"].timeout_s == 2.5


def test_file_replaces_builtins_and_server_section_is_optional(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f'[models.solo]\napp = "{CHAOS}"\n'), {})
    assert list(config.models) == ["solo"]
    assert config.server == ServerConfig()


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_devices_allowed(device: str) -> None:
    assert ModelConfig(app=CARTOON, device=device).device == device


@pytest.mark.parametrize(
    "app", ["a:B", "watchkeeper.apps.cartoon:Cartoon", "_x.y_2:_Z9", "pkg.mod:class_name"]
)
def test_app_shapes_allowed(app: str) -> None:
    assert ModelConfig(app=app).app == app


def test_app_is_not_imported(tmp_path: Path) -> None:
    path = write(tmp_path, '[models.ghost]\napp = "no_such_package.nowhere:Ghost"\n')
    assert load_config(path, {}).models["ghost"].app == "no_such_package.nowhere:Ghost"
    assert "no_such_package" not in sys.modules


def test_source_is_part_of_equality(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, MINIMAL, "a.toml"), {})
    b = load_config(write(tmp_path, MINIMAL, "b.toml"), {})
    assert a != b
    assert (a.server, a.models) == (b.server, b.models)


# --------------------------------------------------------------------------- environment


def test_env_server_key_with_and_without_section(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    assert load_config(path, {"WK_SERVER__PORT": "9000"}).server.port == 9000
    assert load_config(path, {"WK_PORT": "9001"}).server.port == 9001
    config = load_config(
        path, {"WK_HOST": "0.0.0.0", "WK_DATA_DIR": "/srv/wk", "WK_CACHE_DIR": "~/c"}
    )
    assert config.server.host == "0.0.0.0"
    assert config.server.data_dir == Path("/srv/wk")
    assert config.server.cache_dir == Path.home() / "c"


def test_env_wins_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 7000\nhost = 'a'\n" + MINIMAL)
    config = load_config(path, {"WK_PORT": "7001"})
    assert (config.server.port, config.server.host) == (7001, "a")


def test_env_nested_model_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    config = load_config(path, {"WK_MODELS__CARTOON__TIMEOUT_S": "5"})
    assert config.models["cartoon"].timeout_s == 5.0
    assert config.models["cartoon"].app == CARTOON


def test_env_applies_on_top_of_builtins() -> None:
    config = load_config(None, {"WK_MODELS__CARTOON__REPLICAS": "3", "WK_PORT": "8080"})
    assert config.models["cartoon"].replicas == 3
    assert config.server.port == 8080
    assert config.source == BUILTIN_SOURCE


def test_env_adds_a_model(tmp_path: Path) -> None:
    env = {"WK_MODELS__CHAOS__APP": CHAOS, "WK_MODELS__CHAOS__TIMEOUT_S": "1.5"}
    config = load_config(write(tmp_path, MINIMAL), env)
    assert set(config.models) == {"cartoon", "chaos"}
    assert config.models["chaos"] == ModelConfig(app=CHAOS, timeout_s=1.5)


def test_env_can_supply_the_only_model(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[server]\nport = 1234\n"), {"WK_MODELS__X__APP": CHAOS})
    assert list(config.models) == ["x"]


@pytest.mark.parametrize(
    ("var", "raw", "attr", "expected"),
    [
        ("WK_PORT", "5", "port", 5),
        ("WK_GRACE_PERIOD_S", "1.5", "grace_period_s", 1.5),
        ("WK_GRACE_PERIOD_S", "2", "grace_period_s", 2.0),
        ("WK_HOST", '"quoted.example"', "host", "quoted.example"),
        ("WK_HOST", "::1", "host", "::1"),
        ("WK_HOST", "inf", "host", "inf"),  # text keys stay text even when TOML would parse
        ("WK_HOST", "2024-01-01", "host", "2024-01-01"),
        ("WK_LOG_LEVEL", "warning", "log_level", "warning"),
    ],
)
def test_env_value_typing(tmp_path: Path, var: str, raw: str, attr: str, expected: object) -> None:
    value = getattr(load_config(write(tmp_path, MINIMAL), {var: raw}).server, attr)
    assert value == expected
    assert type(value) is type(expected)


def test_env_device_and_app_stay_text(tmp_path: Path) -> None:
    env = {"WK_MODELS__CARTOON__DEVICE": "cuda:3", "WK_MODELS__CARTOON__APP": "'a.b:C'"}
    model = load_config(write(tmp_path, MINIMAL), env).models["cartoon"]
    assert (model.device, model.app) == ("cuda:3", "a.b:C")


def test_env_names_are_lower_cased(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), {"WK_Models__Cartoon__Max_Queue": "7"})
    assert config.models["cartoon"].max_queue == 7


def test_env_inline_table_sets_a_whole_model(tmp_path: Path) -> None:
    env = {"WK_MODELS__CHAOS": f'{{app = "{CHAOS}", replicas = 2}}'}
    assert load_config(write(tmp_path, MINIMAL), env).models["chaos"].replicas == 2


def test_non_config_env_is_ignored(tmp_path: Path) -> None:
    assert "WK_CONFIG" in NON_CONFIG_ENV
    env = {name: "whatever" for name in NON_CONFIG_ENV}
    assert load_config(write(tmp_path, MINIMAL), env).server.port == 8000


def test_env_without_prefix_is_ignored(tmp_path: Path) -> None:
    env = {"PORT": "1", "WKPORT": "1", "XWK_PORT": "1"}
    assert load_config(write(tmp_path, MINIMAL), env).server.port == 8000


# --------------------------------------------------------------------------- resolve path


def test_resolve_config_path() -> None:
    assert resolve_config_path("a.toml", {"WK_CONFIG": "b.toml"}) == Path("a.toml")
    assert resolve_config_path(Path("a.toml"), {}) == Path("a.toml")
    assert resolve_config_path(None, {"WK_CONFIG": "b.toml"}) == Path("b.toml")
    assert resolve_config_path(None, {"WK_CONFIG": ""}) is None
    assert resolve_config_path(None, {}) is None


def test_resolve_config_path_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WK_CONFIG", "/etc/wk.toml")
    assert resolve_config_path(None) == Path("/etc/wk.toml")


# --------------------------------------------------------------------------- file errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    line = only_error(path)
    assert line.startswith(f"{path}: ")
    assert "no such configuration file" in line


def test_unreadable_path(tmp_path: Path) -> None:
    line = only_error(tmp_path)
    assert line.startswith(f"{tmp_path}: cannot read the file")


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 8000\nhost = "a\n')
    line = only_error(path)
    assert line.startswith(f"{path}: invalid TOML: ")
    assert "line 3" in line


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'[server]\nhost = "\xff"\n')
    assert only_error(path).startswith(f"{path}: invalid TOML")


def test_config_error_carries_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", {})
    assert "configuration.md" in info.value.suggestion
    assert info.value.type == "config_error"


# --------------------------------------------------------------------------- value errors


def test_out_of_bounds_names_file_key_and_bound(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "replicas = 0\n")
    assert only_error(path) == f"{path}: models.cartoon.replicas: must be >= 1 (got 0)"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("replicas = 65", "models.cartoon.replicas: must be <= 64 (got 65)"),
        ("timeout_s = 0", "models.cartoon.timeout_s: must be > 0 (got 0)"),
        ("timeout_s = 86401", "models.cartoon.timeout_s: must be <= 86400 (got 86401)"),
        ("max_queue = 0", "models.cartoon.max_queue: must be >= 1 (got 0)"),
        ("max_batch_size = 1025", "models.cartoon.max_batch_size: must be <= 1024 (got 1025)"),
        ("max_wait_ms = -1", "models.cartoon.max_wait_ms: must be >= 0 (got -1)"),
        ("probe_interval_s = -0.5", "models.cartoon.probe_interval_s: must be >= 0 (got -0.5)"),
        ("restart_backoff_max_s = 0", "models.cartoon.restart_backoff_max_s: must be > 0 (got 0)"),
        ("timeout_s = nan", "models.cartoon.timeout_s: must be a finite number (got nan)"),
        ("timeout_s = '5'", "models.cartoon.timeout_s: must be a number (got '5')"),
        ("replicas = 1.5", "models.cartoon.replicas: must be an integer (got 1.5)"),
        ("replicas = true", "models.cartoon.replicas: must be an integer (got True)"),
        ("app = 3", "models.cartoon.app: must be a string (got 3)"),
        (
            "app = 'watchkeeper.apps.cartoon'",
            (
                "models.cartoon.app: must look like module.path:ClassName "
                "(got 'watchkeeper.apps.cartoon')"
            ),
        ),
        ("device = 'gpu'", "models.cartoon.device: must be auto, cpu, cuda or cuda:N (got 'gpu')"),
        ("device = 'cuda:x'", "models.cartoon.device: must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_model_value_errors(tmp_path: Path, line: str, message: str) -> None:
    app = "" if line.startswith("app =") else f"app = '{CARTOON}'\n"
    path = write(tmp_path, f"[models.cartoon]\n{app}{line}\n")
    assert only_error(path).startswith(f"{path}: {message}")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("port = 0", "server.port: must be >= 1 (got 0)"),
        ("port = 65536", "server.port: must be <= 65535 (got 65536)"),
        ("port = '8000'", "server.port: must be an integer (got '8000')"),
        ("grace_period_s = -1", "server.grace_period_s: must be >= 0 (got -1)"),
        ("max_body_mb = 0", "server.max_body_mb: must be > 0 (got 0)"),
        (
            "log_level = 'loud'",
            "server.log_level: must be one of 'debug', 'info', 'warning' or 'error' (got 'loud')",
        ),
        ("host = 1", "server.host: must be a string (got 1)"),
        ("data_dir = 1", "server.data_dir: "),
    ],
)
def test_server_value_errors(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, f"[server]\n{line}\n" + MINIMAL)
    assert only_error(path).startswith(f"{path}: {message}")


def test_unknown_model_key_lists_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "replica = 2\n")
    allowed = ", ".join(sorted(ModelConfig.model_fields))
    assert only_error(path) == f"{path}: models.cartoon.replica: unknown key (allowed: {allowed})"
    assert allowed.startswith("app, device, ")


def test_unknown_server_key_lists_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nprot = 1\n" + MINIMAL)
    line = only_error(path)
    assert line.startswith(f"{path}: server.prot: unknown key (allowed: ")
    for key in ServerConfig.model_fields:
        assert key in line


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[servers]\nport = 1\n" + MINIMAL)
    assert only_error(path) == f"{path}: servers: unknown key (allowed: jobs, models, server, ui)"


def test_source_cannot_be_set_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "source = 'elsewhere'\n" + MINIMAL)
    assert only_error(path) == f"{path}: source: unknown key (allowed: jobs, models, server, ui)"


def test_missing_app(tmp_path: Path) -> None:
    path = write(tmp_path, "[models.cartoon]\nreplicas = 2\n")
    assert only_error(path) == f"{path}: models.cartoon.app: required key is missing"


def test_no_models(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\n")
    line = only_error(path)
    assert line.startswith(f"{path}: models: required")
    assert "[models.NAME]" in line


def test_empty_models_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[models]\n")
    assert only_error(path).startswith(f"{path}: models: required")


@pytest.mark.parametrize("name", ["Cartoon", "9lives", "a.b", "x" * 65, "with space", "_x"])
def test_bad_model_name(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f'[models."{name}"]\napp = "{CARTOON}"\n')
    line = only_error(path)
    assert line.startswith(f"{path}: models.{name}: model name must match ")
    assert config_module.MODEL_NAME_PATTERN in line


@pytest.mark.parametrize("name", ["a", "cartoon", "img2video", "my-model_2", "x" * 64])
def test_good_model_names(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f'[models."{name}"]\napp = "{CARTOON}"\n')
    assert list(load_config(path, {}).models) == [name]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server = 5\n" + MINIMAL, "server: must be a table (got 5)"),
        ("models = 5\n", "models: must be a table (got 5)"),
        ("[models]\ncartoon = 'x'\n", "models.cartoon: must be a table (got 'x')"),
    ],
)
def test_tables_of_the_wrong_type(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert only_error(path) == f"{path}: {message}"


# --------------------------------------------------------------------------- env errors


def test_env_value_error_names_the_variable(tmp_path: Path) -> None:
    line = only_error(write(tmp_path, MINIMAL), {"WK_PORT": "abc"})
    assert line == "WK_PORT: server.port: must be an integer (got 'abc')"


def test_env_error_without_a_file() -> None:
    line = only_error(None, {"WK_MODELS__CARTOON__REPLICAS": "0"})
    assert line == "WK_MODELS__CARTOON__REPLICAS: models.cartoon.replicas: must be >= 1 (got 0)"


@pytest.mark.parametrize("var", ["WK_PROT", "WK_NOPE__PORT"])
def test_env_unknown_top_key(tmp_path: Path, var: str) -> None:
    line = only_error(write(tmp_path, MINIMAL), {var: "1"})
    assert line.startswith(f"{var}: ")
    assert "unknown key (allowed: server, models, or a server key" in line
    assert "port" in line and "data_dir" in line


def test_env_unknown_server_key(tmp_path: Path) -> None:
    line = only_error(write(tmp_path, MINIMAL), {"WK_SERVER__PROT": "1"})
    assert line.startswith("WK_SERVER__PROT: server.prot: unknown key (allowed: allow_anonymous, ")
    assert " port)" in line


def test_env_unknown_model_key(tmp_path: Path) -> None:
    line = only_error(write(tmp_path, MINIMAL), {"WK_MODELS__CARTOON__REPLICA": "2"})
    assert line.startswith("WK_MODELS__CARTOON__REPLICA: models.cartoon.replica: unknown key")
    assert "(allowed: app, device, " in line


def test_env_new_model_without_app_is_blamed_on_the_variable(tmp_path: Path) -> None:
    line = only_error(write(tmp_path, MINIMAL), {"WK_MODELS__CHAOS__TIMEOUT_S": "5"})
    assert line == "WK_MODELS__CHAOS__TIMEOUT_S: models.chaos.app: required key is missing"


@pytest.mark.parametrize("var", ["WK_", "WK_SERVER__", "WK_SERVER____PORT", "WK___PORT"])
def test_env_malformed_names(tmp_path: Path, var: str) -> None:
    line = only_error(write(tmp_path, MINIMAL), {var: "1"})
    assert line.startswith(f"{var}: malformed name")


def test_env_same_key_twice(tmp_path: Path) -> None:
    line = only_error(write(tmp_path, MINIMAL), {"WK_PORT": "1", "WK_SERVER__PORT": "2"})
    assert line == "WK_SERVER__PORT: server.port: also set by WK_PORT"


def test_env_key_below_a_value(tmp_path: Path) -> None:
    line = only_error(write(tmp_path, MINIMAL), {"WK_MODELS__CARTOON__APP__X": "1"})
    assert line.startswith("WK_MODELS__CARTOON__APP__X: models.cartoon.app.x: cannot be set")
    assert "models.cartoon.app is not a table" in line


def test_env_bad_model_name(tmp_path: Path) -> None:
    line = only_error(write(tmp_path, MINIMAL), {"WK_MODELS__9X__APP": CHAOS})
    assert line.startswith("WK_MODELS__9X__APP: models.9x: model name must match")


# --------------------------------------------------------------------------- all together


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        bogus = 1
        [server]
        port = 0
        [models.cartoon]
        app = "{CARTOON}"
        replicas = 0
        replica = 2
        device = "gpu"
        [models.Bad]
        app = "nope"
        """,
    )
    env = {"WK_PROT": "1", "WK_HOST": "h", "WK_MODELS__CARTOON__TIMEOUT_S": "abc"}
    lines = errors_of(path, env)
    expected = [
        f"{path}: bogus: unknown key",
        "WK_PROT: prot: unknown key",
        f"{path}: server.port: must be >= 1 (got 0)",
        f"{path}: models.cartoon.replicas: must be >= 1 (got 0)",
        f"{path}: models.cartoon.replica: unknown key",
        f"{path}: models.cartoon.device: must be auto, cpu, cuda or cuda:N",
        "WK_MODELS__CARTOON__TIMEOUT_S: models.cartoon.timeout_s: must be a number (got 'abc')",
        f"{path}: models.Bad: model name must match",
        f"{path}: models.Bad.app: must look like module.path:ClassName (got 'nope')",
    ]
    for start in expected:
        assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    assert len(lines) == len(expected)


# --------------------------------------------------------------------------- helpers


def test_public_names() -> None:
    for module in (config_module, loading_module):
        for name in module.__all__:
            assert hasattr(module, name), name
    assert {"Config", "ModelConfig", "ServerConfig", "BUILTIN_APPS"} <= set(config_module.__all__)
    assert {"load_config", "resolve_config_path"} <= set(loading_module.__all__)


def test_config_is_a_plain_value(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), {})
    assert Config.model_validate(config.model_dump()) == config


def test_jobs_table_from_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[jobs]\nmax_attempts = 5\n" + MINIMAL)
    config = load_config(path, env={"WK_JOBS__RESULT_TTL_H": "2"})
    assert (config.jobs.max_attempts, config.jobs.result_ttl_h) == (5, 2)
    bad = write(tmp_path, "[jobs]\nmax_attempt = 5\n" + MINIMAL)
    assert "jobs.max_attempt: unknown key (allowed: cancel_grace_s, max_attempts" in only_error(bad)


def test_every_wk_variable_an_app_reads_is_not_taken_for_a_config_key() -> None:
    """An app's own ``WK_*`` setting (e.g. ``WK_EMBED_MODEL_DIR``) must not stop the server
    from starting as an unknown configuration key: every one the apps name is exempt."""
    apps = Path(config_module.__file__).parent / "apps"
    named = {m for path in apps.glob("*.py") for m in re.findall(r'"(WK_[A-Z0-9_]+)"', path.read_text())}
    assert "WK_EMBED_MODEL_DIR" in named
    assert named <= NON_CONFIG_ENV


def test_an_app_setting_in_the_environment_is_not_a_config_error(tmp_path: Path) -> None:
    config = load_config(None, env={"WK_EMBED_MODEL_DIR": str(tmp_path)})
    assert set(config.models) == set(BUILTIN_APPS)


def test_the_ui_is_off_without_a_ui_table(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), {})
    assert config.ui.enabled is False
    assert (config.ui.port, config.ui.host, config.ui.check_interval_s) == (7860, None, 2.0)


def test_ui_table_from_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[ui]\nenabled = true\nport = 7001\n" + MINIMAL)
    config = load_config(path, env={"WK_UI__HOST": "0.0.0.0", "WK_UI__CHECK_FAILURES": "5"})
    assert (config.ui.enabled, config.ui.port, config.ui.host, config.ui.check_failures) == (
        True, 7001, "0.0.0.0", 5)
    assert load_config(write(tmp_path, MINIMAL), {"WK_UI__ENABLED": "true"}).ui.enabled is True
    bad = write(tmp_path, "[ui]\nprot = 1\nport = 0\n" + MINIMAL)
    lines = errors_of(bad)
    assert f"{bad}: ui.port: must be >= 1 (got 0)" in lines
    assert any(line.startswith(f"{bad}: ui.prot: unknown key (allowed: check_failures, ") for line in lines)
