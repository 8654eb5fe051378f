"""Front process: the handles on worker and template processes, and the policy that keeps them alive."""

__all__: list[str] = []
