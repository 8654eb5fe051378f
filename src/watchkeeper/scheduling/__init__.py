"""Front process: per-model queues, admission by memory, quarantine, batch assembly."""

__all__: list[str] = []
