"""LitServe with a no-op API: measures the server itself (HTTP, queues, processes), no model.

One inference worker, one API server process, no batching (as watchkeeper's ``chaos`` model
gets its requests one at a time when they come one at a time). ``POST /predict`` with any
JSON object answers ``{"ok": true}``; with ``{"inputs": {"action": "sleep", "seconds": S}}``
(the ``chaos`` model's own body) it sleeps S seconds first, a stand-in for a model's time
(bench/idle_gap.py).

Run: python bench/baselines/litserve_noop.py --port 8001
"""

import argparse
import time
from typing import Any

import litserve as ls


class NoopAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    # `request` has no annotation: LitServe would take it for the body's type.
    def decode_request(self, request, **kwargs: Any) -> Any:
        return request.get("inputs")

    def predict(self, x: Any, **kwargs: Any) -> Any:
        if isinstance(x, dict) and x.get("action") == "sleep":
            time.sleep(float(x.get("seconds", 0)))
        return x

    def encode_response(self, output: Any, **kwargs: Any):  # no return annotation: LitServe's response model
        return {"ok": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fast-queue", action="store_true", help="ZeroMQ between the processes")
    args = parser.parse_args()
    server = ls.LitServer(NoopAPI(), accelerator="cpu", devices=1, workers_per_device=1,
                          fast_queue=args.fast_queue)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, log_level="warning",
               generate_client_file=False)


if __name__ == "__main__":
    main()
