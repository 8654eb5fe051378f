"""Bytes with a media type: how a model's outputs carry files (an encoded image, a video).

Made in worker processes (``watchkeeper.worker.images.png``, a model's own ``predict``),
carried to the front in ``BatchDone``, and sent to clients as base64 (``http.responses``)
or written as a job's result file (``jobs.results``). Part of the public contract as
``watchkeeper.Blob``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Blob"]


@dataclass(frozen=True, slots=True)
class Blob:
    """Bytes in a model's outputs, e.g. an encoded image; sent to clients as base64."""

    data: bytes
    media_type: str
