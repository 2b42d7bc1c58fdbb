"""kingtask's errors, one tree.

KingtaskError
├── ConfigError        bad configuration file or environment
└── InvalidRequest     a client sent something kingtask refuses (HTTP 403)

Redis being unreachable is not one of them: the API answers redis-py's and
kombu's connection errors with 503 (``kingtask.web.handle_error``).
"""

from __future__ import annotations


class KingtaskError(Exception):
    """Base of every error kingtask raises on purpose."""


class ConfigError(KingtaskError):
    """Raised when a configuration file or environment variable is invalid."""


class InvalidRequest(KingtaskError):
    """Raised when client input is refused; the message is shown to the client."""
