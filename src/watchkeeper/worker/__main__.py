"""``python -m watchkeeper.worker --fd N --parent-pid P --spec JSON``: one worker process.

Started by the front (``watchkeeper.supervision.worker_handle``) when it spawns a worker
instead of forking it from the model's template.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence

from watchkeeper.protocol.wire import BlockingChannel
from watchkeeper.worker.loop import Worker, run_worker
from watchkeeper.worker.process import start_process

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args, spec = start_process("worker", argv)
    channel = BlockingChannel(socket.socket(fileno=args.fd))
    return run_worker(Worker(spec, channel))


if __name__ == "__main__":
    sys.exit(main())
