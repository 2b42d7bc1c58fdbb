"""gunicorn settings for the API.

gunicorn -c python:kingtask.gunicorn_conf 'kingtask.web:create_app()'
"""

from __future__ import annotations

import os as _os

from kingtask import config as _config

_settings = _config.current()
_host, _port = _config.parse_addr(_settings.addr)

bind = [f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"]
workers = _settings.web_workers or 2 * (_os.cpu_count() or 1) + 1
worker_class = "sync"
keepalive = 5
accesslog = None
loglevel = _settings.log_level
# One shared control socket per user would let several kingtask servers collide.
control_socket_disable = True
