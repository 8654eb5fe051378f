"""The entailment app served for real: right answers over HTTP, and weights that are wrong
(shuffled, or not the file the config names by digest) keep it from ever being ready.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import FAST, ServerFactory, toml_value, wait_for
from tests.unit.apps.test_entailment import shuffled_weights
from watchkeeper.apps.entailment import weights_file
from watchkeeper.apps.entailment.app import PROBE_SENTENCES, probe_picture
from watchkeeper.worker import images

ENTAILMENT = "watchkeeper.apps.entailment:Entailment"
KEYS: dict[str, Any] = {"app": ENTAILMENT, **FAST, "timeout_s": 10, "load_timeout_s": 60}


class InlineTable(dict[str, Any]):
    """A ``[models.NAME]`` value written as a TOML inline table (``options = {k = v}``)."""

    def __str__(self) -> str:
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in self.items()) + " }"


def scene_b64() -> str:
    return base64.b64encode(images.png(probe_picture()).data).decode()


def test_the_real_weights_get_ready_and_answer_three_sentences(serve: ServerFactory) -> None:
    srv = serve({"entailment": KEYS})
    assert srv.model_health("entailment")["state"] == "ready"
    picture = scene_b64()
    for text, want in PROBE_SENTENCES:
        response = srv.predict("entailment", {"image": picture, "text": text})
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        assert outputs["label"] == want, (text, outputs)
        assert set(outputs["scores"]) == {"yes", "no", "maybe"}


def test_shuffled_weights_never_get_ready_and_health_names_the_probe(
        serve: ServerFactory, tmp_path: Path) -> None:
    wrong = shuffled_weights(tmp_path / "shuffled.safetensors")
    digest = hashlib.sha256(wrong.read_bytes()).hexdigest()
    options = InlineTable(weights=str(wrong), weights_sha256=digest)
    srv = serve({"entailment": {**KEYS, "options": options}}, wait=False)
    health = wait_for(lambda: (h := srv.model_health("entailment"))["load_failures"] >= 1 and h, 60)
    assert srv.get("/readyz").status_code == 503
    health = srv.wait_state("entailment", "failed", timeout_s=90)
    assert "wrong answers on the probe scene" in health["reason"], health
    assert "expected" in health["reason"]
    assert health["ready_replicas"] == 0
    assert srv.get("/readyz").status_code == 503
    assert "wrong answers on the probe scene" in srv.get("/health").text


def test_a_weights_file_with_another_digest_fails_the_load_naming_file_and_hash(
        serve: ServerFactory, tmp_path: Path) -> None:
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(weights_file.PACKAGED.read_bytes())
    expected = "0" * 64
    options = InlineTable(weights=str(copy), weights_sha256=expected)
    srv = serve({"entailment": {**KEYS, "options": options}}, wait=False)
    health = srv.wait_state("entailment", "failed", timeout_s=60)
    assert weights_file.WEIGHTS_NAME in health["reason"], health
    assert expected in health["reason"]
    assert srv.get("/readyz").status_code == 503


@pytest.mark.parametrize("table", [InlineTable(weight="/x"), InlineTable(weights_sha256="nope")])
def test_bad_options_fail_the_load_naming_the_key(serve: ServerFactory, table: InlineTable) -> None:
    srv = serve({"entailment": {**KEYS, "options": table}}, wait=False)
    health = srv.wait_state("entailment", "failed", timeout_s=60)
    assert f"models.entailment.options.{next(iter(table))}" in health["reason"], health
