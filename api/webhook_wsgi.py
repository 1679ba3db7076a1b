"""The webhook service's WSGI entry point: `gunicorn api.webhook_wsgi:app`, configured from the environment.

Recommended: `gunicorn -w 4 -k gthread --threads 2 --keep-alive 30 -b 0.0.0.0:$WEBHOOK_PORT api.webhook_wsgi:app`
(docs/receipts.md explains the choice).
"""

from __future__ import annotations

from api.request_logging import init_request_logging
from api.webhook_app import create_webhook_app
from shared.platform.logging_config import configure_logging
from shared.platform.settings import load_settings

settings = load_settings()
configure_logging(settings, "webhook")
app = create_webhook_app(settings)
init_request_logging(app)
