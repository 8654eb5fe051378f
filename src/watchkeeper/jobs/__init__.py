"""Durable jobs: long work submitted once, run by the front's job runner, kept in a store.

Front process only. ``model`` (what a job is, the store protocol), ``sqlite_store`` (the
single-instance store), ``results`` (result files, written atomically), ``plumbing`` (the
store's thread, change notices) and ``runner`` (from the store to the schedulers and back).
"""

__all__: list[str] = []
