"""What crosses the sockets between the front and its worker processes."""

__all__: list[str] = []
