"""Built-in apps: the models served when no configuration file is given.

Runs in worker processes only (the front reads ``BUILTIN_APPS``, a dict of import paths,
and never imports the app modules themselves).
"""

from __future__ import annotations

__all__ = ["BUILTIN_APPS"]

#: Model name -> import path of its class, served by ``watchkeeper serve`` with no config.
BUILTIN_APPS: dict[str, str] = {
    "cartoon": "watchkeeper.apps.cartoon:Cartoon",
    "embed": "watchkeeper.apps.embed:Embed",
    "img2video": "watchkeeper.apps.img2video:Img2Video",
}
