"""``python -m watchkeeper.cli``: the same as the ``watchkeeper`` command."""

from __future__ import annotations

import sys

from watchkeeper.cli.main import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
