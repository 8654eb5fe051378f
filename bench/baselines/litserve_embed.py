"""LitServe serving all-MiniLM-L6-v2 with its own dynamic batching (32 requests, 10 ms).

One inference worker on the CPU, one API server process, torch limited to ``--threads``.
``POST /predict`` with ``{"inputs": {"text": "..."}}`` answers ``{"embedding": [384 floats]}``.

Run: python bench/baselines/litserve_embed.py --port 8001 --threads 2
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import litserve as ls

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm import MiniLM, limit_threads


class EmbedAPI(ls.LitAPI):
    def __init__(self, threads: int) -> None:
        super().__init__(max_batch_size=32, batch_timeout=0.01)
        self.threads = threads

    def setup(self, device: str) -> None:
        limit_threads(self.threads)
        self.model = MiniLM(device)
        self.model.encode(["warm-up"])

    # `request` has no annotation: LitServe would take it for the body's type.
    def decode_request(self, request, **kwargs: Any) -> str:
        return request["inputs"]["text"]

    def predict(self, texts: list[str], **kwargs: Any) -> Any:
        return self.model.encode(list(texts))

    def encode_response(self, output: Any, **kwargs: Any):  # no return annotation: LitServe's response model
        return {"embedding": output.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fast-queue", action="store_true", help="ZeroMQ between the processes")
    args = parser.parse_args()
    server = ls.LitServer(EmbedAPI(args.threads), accelerator="cpu", devices=1, workers_per_device=1,
                          fast_queue=args.fast_queue)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, log_level="warning",
               generate_client_file=False)


if __name__ == "__main__":
    main()
