"""Durable jobs: long work submitted once, run by the front's job runner, kept in a store.

Front process only. ``job`` (what a job is, the store protocol), ``sqlite_store`` and
``sqlite_rows`` (the single-instance store), ``results`` (result files, written
atomically), ``store_thread`` and ``changes`` (the store's thread, change notices),
``store_health`` and ``upkeep`` (is the store writable; counts, expiry), ``data_dir_lock``
(one server per data dir), ``recovery`` (start-up), ``attempt`` (one run of a job) and
``runner`` (from the store to the schedulers and back).
"""

__all__: list[str] = []
