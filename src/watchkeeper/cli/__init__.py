"""The ``watchkeeper`` command line."""

__all__: list[str] = []
