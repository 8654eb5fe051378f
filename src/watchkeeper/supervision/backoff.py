"""Back-off between worker restarts: a pure function, used by the supervisor (front process)."""

from __future__ import annotations

__all__ = ["restart_delay"]


def restart_delay(streak: int, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Seconds to wait before the next start after ``streak`` failures in a row.

    The first failure restarts at once (a one-off crash should cost no time), then the
    delay doubles from ``base_s`` up to ``cap_s``: 0, 0.5, 1, 2, 4, ... 30.
    """
    if streak <= 1:
        return 0.0
    return min(cap_s, base_s * 2 ** (streak - 2))
