"""Logging filters the settings' LOGGING config names."""

from __future__ import annotations

import logging


class ClientMistakeAsWarning(logging.Filter):
    """Django logs some client mistakes (a body over the size limit, too many fields) at ERROR with a
    traceback; the client got its 400, so it is a WARNING of one line, not an operator's alarm."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True
