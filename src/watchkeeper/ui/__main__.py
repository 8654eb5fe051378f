"""``python -m watchkeeper.ui``: the web UI's command line.

Runs in the UI process. Parses ``--api``, ``--host``, ``--port`` and ``--allowed-host`` and runs
the server (``watchkeeper.ui.server``); Gradio's analytics are off (no internet).
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from watchkeeper.ui.server import main

__all__ = []

if __name__ == "__main__":
    raise SystemExit(main())
