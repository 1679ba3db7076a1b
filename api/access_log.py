"""gunicorn's access log, masked like the application's logs: `--logger-class=api.access_log.MaskedAccessLogger`.

gunicorn writes the request line (path and query string), the referer, the user agent and, if the format asks
for them, request headers: a phone number in `DELETE /v1/opt-outs/+447700900123` or `?search=%2B4477...`, an API
key or a token would otherwise reach the log file as sent. Every string a log line is built from goes through the
same cleaning as application log records (shared.platform.logging_config.SafetyFilter).
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from shared.platform.logging_config import SafetyFilter, settings_secrets
from shared.platform.settings import SettingsError, load_settings


def _known_secrets() -> list[str]:
    try:
        return settings_secrets(load_settings())
    except SettingsError:  # the application itself will refuse to start and say why
        return []


class MaskedAccessLogger(Logger):
    """gunicorn's logger with every access-log atom cleaned (phone numbers masked, secrets redacted)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.safety = SafetyFilter(_known_secrets())

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        return {name: self.safety.clean(value) if isinstance(value, str) else value for name, value in atoms.items()}
