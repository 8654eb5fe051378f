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
:class:`Blob` values (bytes with a media type, e.g. from :func:`watchkeeper.worker.images.png`),
which the HTTP API sends as base64.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainValidator,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from watchkeeper.protocol.blob import Blob

__all__ = ["Model", "Inputs", "Params", "NoParams", "Options", "NoOptions", "ModelFile", "Example",
           "Blob", "ImageInput", "as_bytes",
           "ProgressFn", "no_progress",
           "CleanText", "CleanTextOrEmpty", "CLEAN_TEXT_NOTE", "MAX_COMBINING_RUN", "clean_text"]


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


class Options(BaseModel):
    """Base of a model's options: the ``[models.NAME.options]`` table of the config, given to
    the model once at load (e.g. another weights file). Unknown keys are refused; an invalid
    table fails the load at once, naming the key (retrying cannot help)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(Options):
    """A model that takes no options."""


@dataclass(frozen=True)
class ModelFile:
    """A file a model needs, checked before ``setup`` (see ``watchkeeper.model_cache``).

    ``name`` is the file's name in the model's folder of the cache (``cache_dir/models/NAME/``)
    and what ``Model.file(name)`` takes; ``sha256`` the hex digest it must have (None: not
    checked); ``source`` a local file copied into the cache when the cached copy is missing
    (e.g. weights shipped in the package); ``path`` a file used where it is, not cached (e.g.
    one named by an option). A missing or mismatched file fails the load, naming the file
    and the expected digest.
    """

    name: str
    sha256: str | None = None
    source: Path | None = None
    path: Path | None = None


@dataclass(frozen=True)
class Example:
    """An input a worker runs by itself: the warm-up before ready, or the deep-health canary.

    ``check`` receives the outputs and returns False (or raises) when they are wrong.
    """

    inputs: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], bool | None] | None = None


#: The ``progress(fraction, message)`` callback a long ``predict`` may declare.
ProgressFn = Callable[[float, str], None]


def no_progress(fraction: float, message: str = "") -> None:
    """A ``progress`` callback that drops the report: the default outside a job."""


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
    from watchkeeper.worker import images  # numpy/Pillow only when a model uses images

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


#: Line breaks that become ``\n``: CRLF, CR, NEL and the Unicode line/paragraph separators.
_LINE_BREAKS = re.compile("\r\n?|[\x85\u2028\u2029]")
#: Unicode categories removed: control (``Cc``; ``\n`` and ``\t`` are kept) and format
#: (``Cf``: zero-width spaces and joiners, bidi controls, BOM, soft hyphen, tags...).
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf"})
_KEPT_CONTROLS = frozenset("\n\t")
#: Combining marks kept in a row (Unicode's stream-safe limit, UAX #15). Longer runs
#: ("Zalgo" text) are cut, which also keeps NFC linear: CPython reorders a run of marks in
#: quadratic time (64,000 alternating accents take over 20 s).
MAX_COMBINING_RUN = 30
# Emoji that need a format character to be themselves are left whole: ZWJ sequences
# (woman U+200D laptop, rainbow flag; the pictograph ranges approximate Unicode's
# Extended_Pictographic) and subdivision flags (black flag, tag letters, cancel tag).
_PICTOGRAPH = (
    "\u00a9\u00ae\u203c\u2049\u2122\u2139\u2190-\u2bff\u3030\u303d\u3297\u3299\U0001f000-\U0001faff"
)
_EMOJI_MODIFIER = "\ufe0f\U0001f3fb-\U0001f3ff"
_EMOJI_WITH_FORMAT_CHARS = re.compile(
    f"([{_PICTOGRAPH}][{_EMOJI_MODIFIER}]*(?:\u200d[{_PICTOGRAPH}][{_EMOJI_MODIFIER}]*)+"
    "|\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f)"
)
CLEAN_TEXT_NOTE = (
    "Cleaned before the length is checked: Unicode NFC; invisible format characters "
    "(zero-width spaces and joiners, bidi controls, BOM, soft hyphen) and control characters "
    "other than newline and tab removed; runs of more than 30 combining marks cut to 30; CRLF, "
    "CR and Unicode line separators turned into LF; leading and trailing whitespace stripped."
)


def clean_text(text: str) -> str:
    r"""``text`` with invisible and control characters removed, NFC-normalised and stripped.

    >>> clean_text("\ufeff  Cafe\u0301\u200b\r\nnext\x00 line\t ")
    'Café\nnext line'

    Removed: Unicode format characters (category ``Cf``: U+200B..U+200F zero-width and
    direction marks, U+202A..U+202E bidi embeddings and overrides, U+2060..U+2064, U+FEFF,
    U+00AD soft hyphen, ...) except inside the emoji sequences made with them, and control
    characters (``Cc``) except ``\n`` and ``\t``. Runs of combining marks are cut to
    ``MAX_COMBINING_RUN``. CRLF, CR, NEL, U+2028 and U+2029 become ``\n``. Lone surrogates
    are left for the ``str`` validation to refuse. Linear in the length of ``text``.
    """
    text = _LINE_BREAKS.sub("\n", text)
    pieces = _EMOJI_WITH_FORMAT_CHARS.split(text)  # odd indices: emoji sequences, kept whole
    text = "".join(p if i % 2 else _drop_invisible(p) for i, p in enumerate(pieces))
    return unicodedata.normalize("NFC", text).strip()


def _drop_invisible(text: str) -> str:
    """``text`` without Cc/Cf characters and overlong runs of combining marks.

    Each distinct character is looked up once; the removals are regular expressions.
    """
    chars = set(text)
    removed = "".join(
        ch for ch in chars
        if ch not in _KEPT_CONTROLS and unicodedata.category(ch) in _REMOVED_CATEGORIES
    )
    if removed:
        text = re.sub(f"[{re.escape(removed)}]", "", text)
    marks = "".join(ch for ch in chars if unicodedata.combining(ch))
    if marks:
        mark = f"[{re.escape(marks)}]"
        text = re.sub(f"({mark}{{{MAX_COMBINING_RUN}}}){mark}+", r"\1", text)
    return text


@dataclass(frozen=True)
class _TextHygiene:
    """Cleans a text field before pydantic's ``str`` checks, so length bounds see the result."""

    allow_empty: bool

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.clean, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["description"] = CLEAN_TEXT_NOTE  # a field's own description replaces it
        return json_schema

    def clean(self, value: Any) -> Any:
        if isinstance(value, bytes | bytearray):  # multipart files arrive as bytes
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("is not valid UTF-8 text") from None
        if not isinstance(value, str):
            return value  # the str validation names the wrong type
        cleaned = clean_text(value)
        if not cleaned and not self.allow_empty:
            raise ValueError("is empty once invisible characters and whitespace are removed")
        return cleaned


#: Text from clients, cleaned (see :func:`clean_text`) and refused when nothing is left.
#: Bounds go on the field and apply to the cleaned text: ``Field(max_length=1000)``.
CleanText = Annotated[str, _TextHygiene(allow_empty=False)]
#: :data:`CleanText` that may be empty (e.g. an optional tag).
CleanTextOrEmpty = Annotated[str, _TextHygiene(allow_empty=True)]


#: ``Options`` under another name: inside ``Model`` the name is the class attribute.
_AnyOptions = Options


class Model:
    """Base class of a served model. Subclasses set ``Inputs``/``Params`` and override methods.

    The worker calls, in order: ``setup(device)`` once, ``predict`` on ``warmup()``'s example
    (when there is one) before it counts as ready, then ``predict_batch`` for every batch.
    """

    Inputs: ClassVar[type[Inputs]] = Inputs
    Params: ClassVar[type[Params]] = NoParams
    #: Largest batch this model accepts in one ``predict_batch`` call.
    max_batch_size: ClassVar[int] = 1
    #: Parameter limits by device memory: ``{12: {"resolution": 512}, 24: {...}}`` (GB ->
    #: a maximum per param, or a list of allowed values; or a list of such sets, one of which
    #: must allow a request's values together); see ``watchkeeper.worker.profiles``.
    profiles: ClassVar[Mapping[float, Mapping[str, Any] | Sequence[Mapping[str, Any]]]] = {}
    #: The ``[models.NAME.options]`` table, validated; the instance is ``self.options``.
    Options: ClassVar[type[Options]] = NoOptions

    #: Set by the worker before ``setup``: the validated options and the checked files.
    options: _AnyOptions
    _files: dict[str, Path]

    @classmethod
    def files(cls, options: Any) -> list[ModelFile]:
        """The files this model needs with these options (checked before ``setup``)."""
        return []

    def file(self, name: str) -> Path:
        """The checked local path of the declared file ``name`` (valid in ``setup`` on)."""
        files = getattr(self, "_files", {})
        if name not in files:
            raise KeyError(f"{type(self).__name__} declares no file {name!r} (declared: "
                           f"{', '.join(sorted(files)) or 'none'}); list it in files()")
        return files[name]

    def setup(self, device: str) -> None:
        """Load weights (``self.file(name)``) and move them to ``device``."""

    def predict(self, inputs: Any, params: Any) -> dict[str, Any]:
        """Run one request: validated ``Inputs`` and ``Params`` in, a dict of outputs out.

        Long work may declare a third parameter, ``progress``, and call
        ``progress(fraction, message)`` as it goes (``fraction`` from 0 to 1): jobs show it,
        each call counts as a heartbeat, and a cancelled job's next call raises
        ``Cancelled`` (see ``watchkeeper.worker.progress``).
        """
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

    # --- memory: these two run in the model's template process, where setup() may not
    # have run: they must depend on the params (and class attributes) only.

    def estimate_memory(self, params: Any) -> int | None:
        """Bytes one request with ``params`` needs at its peak (None: learn it by measuring)."""
        return None

    def degrade(self, params: Any) -> Any | None:
        """The next smaller params to try when these do not fit (None: nothing smaller)."""
        return None
