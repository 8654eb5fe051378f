"""What the front will unpickle from its workers and templates: an allow-list of globals.

Runs in the front process: ``protocol.wire.read_message`` (a worker's socket) and the
template handle's reader decode with :func:`loads_allowed`; a worker decodes what the front
sends with plain pickle (the front is trusted, the model is not).

A pickle names a global (a class, a function) for everything that is not a plain value,
and a plain unpickler imports its module and calls it: an output holding a class of the
model's own would make the front import model code, through the wall. So a frame may name
only what the conversation (``protocol.messages``) and a model's outputs legitimately hold
(see ``contract`` and ``http.responses``): the protocol's messages, :class:`Blob`, numpy
arrays and scalars, ``bytearray``, and the date, time and UUID types the JSON encoder writes.
JSON values (dicts, lists, strings, numbers, bytes) are pickle opcodes, not globals.
Anything else raises :class:`RefusedGlobal` before any import.

numpy arrays cross as numpy pickles (their memory out of band, ``protocol.wire``): the
names are listed as strings, so the front imports numpy only when a worker first sends an
array (as it always has), never at start-up. Each allowed global is resolved once and
cached; the unpickler is the C one, made per frame as ``pickle.loads`` does.
"""

from __future__ import annotations

import importlib
import io
import pickle
from collections.abc import Sequence
from typing import Any

from watchkeeper.protocol import messages

__all__ = ["ALLOWED_GLOBALS", "OUTPUTS_MAY_HOLD", "RefusedGlobal", "loads_allowed"]

#: Said to whoever sent something else (the model's owner, through the request's error).
OUTPUTS_MAY_HOLD = "outputs may hold JSON values, numpy arrays, Blob, bytes, dates and UUIDs"

_MESSAGES = frozenset(("watchkeeper.protocol.messages", name) for name in messages.__all__
                      if isinstance(getattr(messages, name), type))
_NUMPY = frozenset(
    (f"numpy.{core}.{module}", name)
    for core in ("core", "_core")  # numpy 1 and numpy 2 name the same functions
    for module, name in (("numeric", "_frombuffer"), ("multiarray", "_reconstruct"),
                         ("multiarray", "scalar"))
) | {("numpy", "ndarray"), ("numpy", "dtype")}
_OTHERS = frozenset({
    ("watchkeeper.protocol.blob", "Blob"),
    ("builtins", "bytearray"),
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"), ("datetime", "timezone"),
    ("datetime", "timedelta"),
    ("uuid", "UUID"),
})
#: Every ``(module, name)`` a frame from a worker or template may name.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = _MESSAGES | _NUMPY | _OTHERS

_resolved: dict[tuple[str, str], Any] = {}


class RefusedGlobal(pickle.UnpicklingError):
    """A frame named a global the front does not unpickle (nothing was imported)."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"the front does not unpickle {module}.{name} ({OUTPUTS_MAY_HOLD})")
        self.module, self.name = module, name


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _resolved.get((module, name))
        return found if found is not None else _resolve(module, name)


def _resolve(module: str, name: str) -> Any:
    if (module, name) not in ALLOWED_GLOBALS:
        raise RefusedGlobal(module, name)
    found = _resolved[(module, name)] = getattr(importlib.import_module(module), name)
    return found


def loads_allowed(stream: bytes | bytearray | memoryview, buffers: Sequence[Any] = ()) -> Any:
    """``pickle.loads`` that refuses every global outside :data:`ALLOWED_GLOBALS`."""
    return _AllowListUnpickler(io.BytesIO(stream), buffers=buffers).load()
