"""The WSGI entry point: `gunicorn api.wsgi:app`, configured from the environment."""

from __future__ import annotations

from api.app import create_app
from shared.platform.logging_config import configure_logging
from shared.platform.settings import load_settings

settings = load_settings()
configure_logging(settings, "api")
app = create_app(settings)
