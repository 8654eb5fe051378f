"""The deployment files, checked by the tools operators run: ``systemd-analyze verify`` on
the unit, ``kubernetes-validate`` (strict, against a pinned Kubernetes) on the manifests,
the ServiceMonitor (a CRD kubernetes-validate has no schema for) against the Prometheus
Operator's own types, and hadolint on the Dockerfile; and the numbers they share with the
server's configuration (grace period, directories, the torch pin).

kubernetes-validate, cloudcoil's Prometheus Operator models and hadolint are dev
dependencies: a missing one fails these tests. systemd-analyze comes with systemd; where it
is absent its test skips, saying so.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

from watchkeeper.config_loading import load_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "watchkeeper.service"
KUBERNETES = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
#: The Kubernetes version the manifests are validated against.
KUBERNETES_VERSION = "1.33.0"
#: What the shutdown takes beyond grace_period_s: uvicorn's margin (2 s) and the workers'
#: STOP_TIMEOUT_S (5 s), plus slack (docs/operations.md#shutdown).
SHUTDOWN_BEYOND_GRACE_S = 10
DEFAULT_GRACE_S = 30


def tool(name: str) -> str:
    """The venv's copy of a dev tool, else one on PATH; missing fails the test."""
    for candidate in (Path(sys.executable).parent / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail(f"{name} is not installed: `pip install -e '.[dev]'`")


# --- systemd ----------------------------------------------------------------------------------


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on a copy whose ExecStart is this venv's watchkeeper
    (verify refuses a command that does not exist here, as /opt/watchkeeper does not)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is absent (systemd is not installed on this machine)")
    watchkeeper = Path(sys.executable).parent / "watchkeeper"
    copy = tmp_path / "watchkeeper.service"
    copy.write_text(unit_text.replace("/opt/watchkeeper/bin/watchkeeper", str(watchkeeper)))
    return subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          timeout=60)


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert "ExecStart=/opt/watchkeeper/bin/watchkeeper serve" in text
    result = verify(text, tmp_path)
    # verify exits 0 on unknown keys and bad values too: any output is a finding.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_analyze_verify_finds_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a bad time are reported."""
    broken = UNIT.read_text().replace("KillMode=mixed", "KilMode=mixed").replace(
        "WatchdogSec=30s", "WatchdogSec=thirty")
    result = verify(broken, tmp_path)
    assert "KilMode" in result.stderr and "thirty" in result.stderr


def test_the_unit_fits_the_server() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["Restart"] == "always" and service["KillMode"] == "mixed"
    assert service["OOMPolicy"] == "continue"
    assert unit()["Unit"]["StartLimitBurst"] == "5"
    assert seconds(service["TimeoutStopSec"]) >= DEFAULT_GRACE_S + SHUTDOWN_BEYOND_GRACE_S
    assert seconds(service["WatchdogSec"]) >= 10
    assert service["StateDirectory"] == service["CacheDirectory"] == "watchkeeper"
    for option in ("ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
                   "User=watchkeeper"):
        assert option in UNIT.read_text().splitlines()


def test_the_units_environment_names_are_configuration_keys() -> None:
    env = dict(line.removeprefix("Environment=").split("=", 1)
               for line in UNIT.read_text().splitlines() if line.startswith("Environment=WK_"))
    assert set(env) == {"WK_DATA_DIR", "WK_CACHE_DIR"}
    expanded = {k: v.replace("%S", "/var/lib").replace("%C", "/var/cache") for k, v in env.items()}
    config = load_config(None, env=expanded)
    assert (str(config.server.data_dir), str(config.server.cache_dir)) == (
        "/var/lib/watchkeeper", "/var/cache/watchkeeper")


# --- Kubernetes -------------------------------------------------------------------------------


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def by_kind(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents() if doc["kind"] == kind]
    return found


@pytest.mark.parametrize("doc", [d for d in documents() if d["kind"] != "ServiceMonitor"],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_kubernetes_validate_accepts_each_manifest(doc: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True) == "1.33"


def test_kubernetes_validate_refuses_a_broken_manifest() -> None:
    """The check above can fail: a misspelt field (strict) and a wrong type."""
    deployment = by_kind("Deployment")
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 50
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = by_kind("Deployment")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def service_monitor_errors(doc: dict[str, Any]) -> list[str]:
    """The ServiceMonitor against the Prometheus Operator's types (cloudcoil's models,
    generated from the CRD): wrong values raise, and a field the CRD does not have (which
    the models drop) shows as a difference after a round trip."""
    try:
        model = prometheus_operator.ServiceMonitor.model_validate(doc)
    except ValueError as exc:
        return [str(exc)]
    again = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [] if again == doc else [f"fields the CRD does not know: {doc} != {again}"]


def test_the_service_monitor_matches_its_crd_and_the_service() -> None:
    monitor, service = by_kind("ServiceMonitor"), by_kind("Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert service_monitor_errors(monitor) == []
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {port["name"] for port in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_the_service_monitor_check_can_fail() -> None:
    monitor = by_kind("ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "often"
    assert service_monitor_errors(monitor)
    monitor = by_kind("ServiceMonitor")
    monitor["spec"]["endpoints"][0]["pathh"] = "/metrics"
    assert service_monitor_errors(monitor)


def test_the_deployment_fits_the_server(tmp_path: Path) -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    toml = by_kind("ConfigMap")["data"]["watchkeeper.toml"]
    (tmp_path / "watchkeeper.toml").write_text(toml)
    grace = tomllib.loads(toml)["server"]["grace_period_s"]
    env = {e["name"]: e["value"] for e in container["env"]}
    config = load_config(tmp_path / "watchkeeper.toml", env=env)  # the ConfigMap is valid
    assert config.server.grace_period_s == grace
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1].split("sleep(")[1][:-1])
    assert pod["terminationGracePeriodSeconds"] >= grace + SHUTDOWN_BEYOND_GRACE_S + pause
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[str(config.server.cache_dir)] == "model-cache"
    service = by_kind("Service")
    assert service["spec"]["selector"].items() <= pod_labels().items()
    assert by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= (
        pod_labels().items())


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = by_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


# --- Docker -----------------------------------------------------------------------------------


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("hadolint"), "--no-color", str(path)], capture_output=True,
                          text=True, timeout=60)


def test_hadolint_accepts_the_dockerfile() -> None:
    result = hadolint(DOCKERFILE)
    assert (result.returncode, result.stdout) == (0, "")


def test_hadolint_finds_a_broken_dockerfile(tmp_path: Path) -> None:
    """The check above can fail: a root user and an unpinned apt install are reported."""
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace(
        "USER 10001:10001", "USER root\nRUN apt-get update && apt-get install -y curl"))
    result = hadolint(broken)
    assert result.returncode != 0 and "DL3002" in result.stdout


def test_the_dockerfile_fits_the_project() -> None:
    text = DOCKERFILE.read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (torch_pin,) = [d for d in pyproject["project"]["optional-dependencies"]["apps"]
                    if d.startswith("torch")]
    assert torch_pin in text
    assert re.search(r"^HEALTHCHECK .*\n.*/livez", text, re.MULTILINE)
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert 'VOLUME ["/var/cache/watchkeeper"' in text
    assert (ROOT / ".dockerignore").read_text().splitlines()[1] == "*"
