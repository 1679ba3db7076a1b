"""The HTTP API: `create_app(settings)` builds the Flask application (see docs/api.md)."""

from api.app import create_app

__all__ = ["create_app"]
