"""Code that runs in worker and template processes: never imports the web framework."""

__all__: list[str] = []
