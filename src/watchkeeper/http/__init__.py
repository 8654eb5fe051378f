"""The HTTP layer of the front process (FastAPI/Starlette). Workers never import it."""

from watchkeeper.http.app import create_app

__all__ = ["create_app"]
