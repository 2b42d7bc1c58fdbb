"""kingtask's errors, one tree.

KingtaskError
├── ConfigError        bad configuration file or environment
├── InvalidRequest     a client sent something kingtask refuses (HTTP 403)
└── Unavailable        Redis cannot be reached (HTTP 503)
"""

from __future__ import annotations


class KingtaskError(Exception):
    """Base of every error kingtask raises on purpose."""


class ConfigError(KingtaskError):
    """Raised when a configuration file or environment variable is invalid."""


class InvalidRequest(KingtaskError):
    """Raised when client input is refused; the message is shown to the client."""


class Unavailable(KingtaskError):
    """Raised when a service kingtask depends on (Redis) cannot be reached."""
