"""Log records to stderr as text or, for log shippers, one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
import time

_CREDENTIAL_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if as_json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # At DEBUG these log every request's headers, session token and access key id included:
    # credentials must never reach the logs, whatever the level.
    for name in _CREDENTIAL_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
