"""A hand-written model service: a global model loaded at import, called in the handler.

A synchronous handler (FastAPI runs it in its thread pool) around one process-wide model
behind a lock, as a typical portrait-cartoon service keeps its single pipeline; no batching,
no worker process. torch is limited to ``BENCH_THREADS`` threads.

Run: BENCH_THREADS=2 uvicorn fastapi_embed:app --app-dir bench/baselines --host 127.0.0.1 --port 8002
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm import MiniLM, limit_threads, threads_from_env

limit_threads(threads_from_env())
model = MiniLM("cpu")
model.encode(["warm-up"])
lock = threading.Lock()
app = FastAPI()


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/predict")
def predict(body: dict[str, Any]) -> dict[str, Any]:
    with lock:
        vector = model.encode([body["inputs"]["text"]])[0]
    return {"embedding": vector.tolist()}
