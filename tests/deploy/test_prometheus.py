"""The Prometheus rules (deploy/prometheus): promtool's unit tests pass, every alert has a
case that fires it and one that does not, runbook links point at real sections, and
promtool accepts a real scrape of a running server's /metrics.

promtool comes from the Debian package ``prometheus``; without it these tests fail (they
are not skipped): the rules would ship unchecked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import CHAOS, FAST, Servers

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: apt-get install prometheus (Debian package)"
    return path


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a markdown file's headings."""
    found, fenced = set(), False
    for line in markdown.splitlines():
        fenced ^= line.startswith("```")
        if line.startswith("#") and not fenced:
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return found


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for case in test.get("alert_rule_test", [])]
    for rule in alerts():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} never fires in a test"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} never stays quiet"


def test_every_alert_explains_itself_and_links_a_runbook() -> None:
    sections = anchors(OPERATIONS.read_text())
    for rule in alerts():
        notes = rule["annotations"]
        assert notes["summary"] and "{{ $value" in notes["description"], rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor in sections, notes["runbook_url"]


def test_the_anchor_check_sees_a_missing_section() -> None:
    assert "watchkeeperdown" in anchors("## WatchkeeperDown\n")
    assert "watchkeeperdown" not in anchors("WatchkeeperDown\n")


def test_promtool_accepts_a_real_scrape(tmp_path: Path) -> None:
    tool = promtool()
    servers = Servers(tmp_path)
    try:
        srv = servers.start({"chaos": {"app": CHAOS, **FAST}})
        assert srv.predict("chaos", {"action": "ok"}).status_code == 200
        assert srv.predict("chaos", {"action": "raise"}).status_code == 500
        scrape = srv.get("/metrics").text
    finally:
        servers.stop_all()
    assert "watchkeeper_latency_target_seconds" in scrape
    result = subprocess.run([tool, "check", "metrics"], input=scrape, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
