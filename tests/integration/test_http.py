"""The HTTP surface with the real cartoon app: predict, schemas, and every kind of bad input."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import CHAOS, FAST, Server, Servers

CARTOON = "watchkeeper.apps.cartoon:Cartoon"


def photo(fmt: str = "JPEG", size: tuple[int, int] = (320, 240)) -> bytes:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.uint8)
    rgb = np.stack([np.tile(x, (h, 1)), np.tile(x[::-1], (h, 1)), np.full((h, w), 90, np.uint8)], -1)
    rgb[h // 4 : h // 2, w // 4 : w // 2] = (220, 40, 60)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def decode_png(b64: str) -> Image.Image:
    data = base64.b64decode(b64)
    assert data.startswith(b"\x89PNG")
    return Image.open(io.BytesIO(data))


@pytest.fixture(scope="module")
def srv(module_servers: Servers) -> Server:
    """One server for the module: these tests only read, none breaks a worker."""
    return module_servers.start(
        {"cartoon": {"app": CARTOON, **FAST, "timeout_s": 20}, "chaos": {"app": CHAOS, **FAST}},
        server={"max_body_mb": 1},
    )


def test_cartoon_json_base64_returns_a_png_of_the_asked_size(srv: Server) -> None:
    body = {"inputs": {"image": base64.b64encode(photo()).decode()},
            "params": {"resolution": 512, "style_level": 0.9}}
    response = srv.client.post("/v1/models/cartoon/predict", json=body,
                               headers={"X-Request-ID": "tour-1"})
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == "tour-1"
    out = response.json()
    assert out["request_id"] == "tour-1"
    assert out["model"] == "cartoon"
    assert set(out["timings"]) == {"queue_ms", "inference_ms", "total_ms"}
    image = decode_png(out["outputs"]["image"])
    assert max(image.size) == 512
    assert image.size == (512, 384)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_cartoon_multipart_upload(srv: Server, fmt: str) -> None:
    response = srv.client.post("/v1/models/cartoon/predict",
                               files={"image": (f"x.{fmt.lower()}", photo(fmt), "application/octet-stream")},
                               data={"params": '{"resolution": 640}'})
    assert response.status_code == 200, response.text
    assert max(decode_png(response.json()["outputs"]["image"]).size) == 640


def test_models_list_and_schema_with_bounds(srv: Server) -> None:
    listing = srv.get("/v1/models").json()["models"]
    assert {m["name"] for m in listing} == {"cartoon", "chaos"}
    cartoon = srv.get("/v1/models/cartoon").json()
    assert cartoon["state"] == "ready"
    assert cartoon["replicas"] == {"configured": 1, "ready": 1}
    props = cartoon["params_schema"]["properties"]
    assert props["resolution"]["minimum"] == 512
    assert props["resolution"]["maximum"] == 2048
    assert props["resolution"]["multipleOf"] == 128
    assert props["style_level"]["minimum"] == 0.1
    assert cartoon["inputs_schema"]["required"] == ["image"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"inputs": {"image": "aGVsbG8="}}, 422, "inputs.image"),  # not an image
        ({"inputs": {"image": "%%%"}}, 422, "inputs.image"),  # not base64
        ({"inputs": {}}, 422, "inputs.image"),  # missing
        ({"inputs": {"image": 5}}, 422, "inputs.image"),  # wrong type
        ({"inputs": {"image": "x", "extra": 1}}, 422, "inputs.extra"),
        ({"inputs": {"image": "x"}, "params": {"resolution": 4096}}, 422, "params.resolution"),
        ({"inputs": {"image": "x"}, "params": {"resolution": 600}}, 422, "params.resolution"),
        ({"inputs": {"image": "x"}, "params": {"style_level": "high"}}, 422, "params.style_level"),
        ({"inputs": {"image": "x"}, "params": {"colour": 1}}, 422, "params"),
        ({"params": {}}, 422, "inputs"),
        ({"inputs": [1, 2]}, 422, "inputs"),
        ({"inputs": {"image": "x"}, "what": 1}, 422, "what"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(srv: Server, body: dict, status: int, field: str) -> None:
    response = srv.client.post("/v1/models/cartoon/predict", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] in ("invalid_input", "bad_input")
    assert field in error["message"]
    assert error["suggestion"]
    assert error["request_id"] == response.headers["X-Request-ID"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{not json", "application/json"), (b"[1, 2]", "application/json"),
     (b"\xff\xfe\x00garbage", "application/json"), (b"a=b", "application/x-www-form-urlencoded")],
)
def test_malformed_bodies_are_400(srv: Server, content: bytes, content_type: str) -> None:
    response = srv.client.post("/v1/models/cartoon/predict", content=content,
                               headers={"content-type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "bad_input"


def test_body_over_the_limit_is_413(srv: Server) -> None:
    big = base64.b64encode(b"\0" * 1_200_000).decode()
    response = srv.client.post("/v1/models/cartoon/predict", json={"inputs": {"image": big}})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]


def test_decompression_bomb_is_413(srv: Server) -> None:
    bomb = io.BytesIO()
    Image.new("L", (8000, 8000)).save(bomb, format="PNG")  # 64 MP, a few KB compressed
    response = srv.client.post("/v1/models/cartoon/predict",
                               files={"image": ("bomb.png", bomb.getvalue(), "image/png")})
    assert response.status_code == 413, response.text
    assert srv.get("/readyz").status_code == 200


def test_unknown_model_and_route_are_404_in_the_error_shape(srv: Server) -> None:
    for response in (srv.client.post("/v1/models/nope/predict", json={"inputs": {}}),
                     srv.get("/v1/models/nope"), srv.get("/no/such/route")):
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"
        assert response.headers["X-Request-ID"]


def test_every_response_carries_a_request_id(srv: Server) -> None:
    for path in ("/livez", "/readyz", "/health", "/health/simple", "/metrics", "/v1/models"):
        response = srv.get(path)
        assert response.status_code == 200, path
        assert len(response.headers["X-Request-ID"]) >= 8
    assert srv.get("/livez", headers={"X-Request-ID": "bad id with spaces"}).headers[
        "X-Request-ID"] != "bad id with spaces"


def test_health_reports_models_replicas_and_resources(srv: Server) -> None:
    health = srv.get("/health").json()
    assert health["status"] == "ok"
    cartoon = health["models"]["cartoon"]
    replica = cartoon["replicas"][0]
    assert replica["state"] in ("ready", "busy")
    assert replica["pid"] > 0
    assert replica["rss_bytes"] > 10_000_000
    assert set(replica["startup_ms"]) == {"fork", "warmup"}  # forked from the template
    template = cartoon["template"]
    assert template["state"] == "ready"
    assert set(template["startup_ms"]) == {"import", "prepare", "setup"}
    resources = health["resources"]
    assert resources["memory"]["total_bytes"] > 0
    assert {d["path"] for d in resources["disks"]} >= {str(p) for p in ()}
    assert len(resources["disks"]) == 2
    assert resources["gpus"] == []
    assert srv.get("/health/simple").text == "OK"


def test_metrics_count_requests(srv: Server) -> None:
    srv.predict("chaos", {"action": "ok", "tag": "metrics"})
    text = srv.get("/metrics").text
    assert 'watchkeeper_requests_total{model="chaos",status="200"}' in text
    assert 'watchkeeper_model_state{model="cartoon",state="ready"} 1.0' in text
    assert "watchkeeper_worker_rss_bytes" in text


def test_chaos_params_bounds_checked_in_the_front(srv: Server) -> None:
    response = srv.predict("chaos", {"action": "ok"}, {"scale": 11})
    assert response.status_code == 422
    assert "params.scale" in response.json()["error"]["message"]
    response = srv.predict("chaos", {"action": "explode"})
    assert response.status_code == 422
    assert "inputs.action" in response.json()["error"]["message"]
