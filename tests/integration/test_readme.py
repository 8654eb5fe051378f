"""The README's "Serve your own model" example, run as written against a real server."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.integration.conftest import ServerFactory, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"


def code_block(language: str, first_line: str) -> str:
    """The README code block in ``language`` whose first line is ``first_line``."""
    for match in re.finditer(rf"```{language}\n(.*?)```", README.read_text(), re.S):
        if match.group(1).startswith(first_line):
            return match.group(1)
    raise AssertionError(f"no {language} block starting with {first_line!r} in README.md")


def test_readme_model_example_serves(serve: ServerFactory, tmp_path: Path) -> None:
    (tmp_path / "my_models.py").write_text(code_block("python", "# my_models.py"))
    config = tomllib.loads(code_block("toml", "# watchkeeper.toml"))
    models = {name: {**keys, "probe_interval_s": 0.5} for name, keys in config["models"].items()}
    srv = serve(models, env={"PYTHONPATH": str(tmp_path)})
    response = srv.predict("shout", {"text": "hi"}, {"times": 2})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == {"text": "HI! HI!"}
    assert srv.predict("shout", {"text": "hi"}, {"times": 9}).status_code == 422
    health = srv.wait_state("shout", "ready")
    assert health["replicas"][0]["startup_ms"]["warmup"] >= 0
    wait_for(lambda: (srv.model_health("shout")["probe"] or {}).get("ok"), 10)
