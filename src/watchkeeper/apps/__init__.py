"""Built-in apps: the models served when no configuration file is given.

Runs in worker processes only: the front knows them by import path
(``watchkeeper.config.BUILTIN_APPS``) and never imports these modules.
"""

__all__: list[str] = []
