"""The process log as operators read it."""

import logging

from gateway_project.lib.request_ids import RequestIdFilter


def console_line(record: logging.LogRecord) -> str:
    """`record` as the process log prints it: through the handler settings.LOGGING installs."""
    [console] = [
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, RequestIdFilter) for f in handler.filters)
    ]
    return console.format(record)
