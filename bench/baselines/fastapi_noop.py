"""A plain FastAPI no-op handler: the floor of the HTTP stack (uvicorn + FastAPI) with no model.

Context for the no-op table of ``bench/serving.py``; ``POST /predict`` answers ``{"ok": true}``.

Run: uvicorn fastapi_noop:app --app-dir bench/baselines --host 127.0.0.1 --port 8002
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/predict")
async def predict(body: dict[str, Any]) -> dict[str, bool]:
    return {"ok": True}
