"""Front process: the server, its runtime, each model's service, health, resources, metrics."""

__all__: list[str] = []
