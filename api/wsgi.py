"""The WSGI entry point: `gunicorn api.wsgi:app`, configured from the environment."""

from __future__ import annotations

import logging

from api.app import create_app
from shared.settings import load_settings

settings = load_settings()
logging.basicConfig(
    level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)
app = create_app(settings)
