"""The HTTP layer of the front process (FastAPI/Starlette): routes, bodies, errors, statuses.

HTTP status codes are chosen in this package and nowhere else. Workers never import it.
"""

__all__: list[str] = []
