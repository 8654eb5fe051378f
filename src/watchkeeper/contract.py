"""The model contract: what a class must have for watchkeeper to serve it.

Runs in worker processes (the front never imports a model). A model is a subclass of
:class:`Model` with two pydantic classes and a few methods::

    from pydantic import Field
    import watchkeeper as wk

    class Upper(wk.Model):
        class Inputs(wk.Inputs):
            text: str = Field(max_length=1000)

        class Params(wk.Params):
            repeat: int = Field(1, ge=1, le=5)

        def setup(self, device: str) -> None:
            self.suffix = "!"                       # load weights here, once

        def predict(self, inputs, params):
            return {"text": inputs.text.upper() * params.repeat + self.suffix}

        def probe(self) -> wk.Example:              # canary for the deep health check
            return wk.Example({"text": "a"}, check=lambda out: out["text"] == "A!")

``predict`` returns a dict of JSON-able values, numpy arrays (sent as lists) and
:class:`Blob` values (bytes with a media type, e.g. from :func:`watchkeeper.images.png`),
which the HTTP API sends as base64.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, PlainValidator, WithJsonSchema

__all__ = ["Model", "Inputs", "Params", "NoParams", "Example", "Blob", "ImageInput", "as_bytes"]


class Inputs(BaseModel):
    """Base of a model's inputs: unknown fields are refused, images may be arbitrary types."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)


class Params(BaseModel):
    """Base of a model's parameters: bounded fields with defaults; unknown fields are refused.

    Its JSON schema is published by ``GET /v1/models/{name}`` and checked by the front.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """A model that takes no parameters."""


@dataclass(frozen=True, slots=True)
class Blob:
    """Bytes in a model's outputs, e.g. an encoded image; sent to clients as base64."""

    data: bytes
    media_type: str


@dataclass(frozen=True)
class Example:
    """An input a worker runs by itself: the warm-up before ready, or the deep-health canary.

    ``check`` receives the outputs and returns False (or raises) when they are wrong.
    """

    inputs: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], bool | None] | None = None


def as_bytes(value: Any) -> bytes:
    """Bytes of an uploaded file: raw bytes (multipart) or a base64 string (JSON)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        text = "".join(text.split())  # MIME base64 (e.g. the `base64` tool) wraps lines
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None
    raise ValueError("expected a file upload or a base64 string")


def _decode_image_field(value: Any) -> Any:
    from watchkeeper import images  # numpy/Pillow only when a model uses images

    if isinstance(value, images.np.ndarray):
        if value.ndim != 3 or value.shape[2] != 3 or value.dtype != images.np.uint8:
            raise ValueError(
                f"expected an RGB uint8 array of shape (height, width, 3), "
                f"got shape {value.shape} and dtype {value.dtype}"
            )
        return value
    return images.decode(as_bytes(value))


#: An image input: PNG, JPEG or WebP as a file upload or base64; the model gets an RGB
#: ``numpy.ndarray`` of shape (height, width, 3) and dtype uint8.
ImageInput = Annotated[
    Any,
    PlainValidator(_decode_image_field),
    WithJsonSchema(
        {
            "type": "string",
            "contentEncoding": "base64",
            "contentMediaType": "image/*",
            "description": "PNG, JPEG or WebP image: a multipart file or a base64 string",
        }
    ),
]


class Model:
    """Base class of a served model. Subclasses set ``Inputs``/``Params`` and override methods.

    The worker calls, in order: ``setup(device)`` once, ``predict`` on ``warmup()``'s example
    (when there is one) before it counts as ready, then ``predict_batch`` for every batch.
    """

    Inputs: ClassVar[type[Inputs]] = Inputs
    Params: ClassVar[type[Params]] = NoParams
    #: Largest batch this model accepts in one ``predict_batch`` call.
    max_batch_size: ClassVar[int] = 1

    def setup(self, device: str) -> None:
        """Load weights (from the local cache) and move them to ``device``."""

    def predict(self, inputs: Any, params: Any) -> dict[str, Any]:
        """Run one request: validated ``Inputs`` and ``Params`` in, a dict of outputs out."""
        raise NotImplementedError(f"{type(self).__name__}.predict")

    def predict_batch(self, inputs: Sequence[Any], params: Sequence[Any]) -> list[dict[str, Any]]:
        """Run a batch; the default calls ``predict`` on each item. Keep outputs in order."""
        return [self.predict(one, p) for one, p in zip(inputs, params, strict=True)]

    def warmup(self) -> Example | None:
        """The input run before the worker counts as ready; by default the probe's."""
        return self.probe()

    def probe(self) -> Example | None:
        """A tiny canary input and a check of its output, for the deep health check."""
        return None
