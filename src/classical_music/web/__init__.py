"""The browser studio: compose, listen to and download pieces from a local web page.

``classical-music serve`` runs it; :func:`create_app` builds the FastAPI app (for tests or for
mounting elsewhere). See server.py for the API and its limits.
"""

from .server import create_app

__all__ = ["create_app"]
