"""The webhook service's WSGI entry point: `gunicorn api.webhook_wsgi:app`, configured from the environment.

Recommended: `gunicorn -w 2 -k gthread --threads 4 -b 0.0.0.0:$WEBHOOK_PORT api.webhook_wsgi:app`
(docs/receipts.md explains the choice).
"""

from __future__ import annotations

import logging

from api.webhook_app import create_webhook_app
from shared.settings import load_settings

settings = load_settings()
logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_webhook_app(settings)
