"""The embedded Redis: zero set-up, durable, and robust to a crashed run."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from kingtask.embedded import EmbeddedRedis
from kingtask.errors import ConfigError, KingtaskError

from .conftest import SCRATCH


def client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(server.socket), decode_responses=True)


@pytest.fixture
def data_dir(request: pytest.FixtureRequest) -> Path:
    return SCRATCH / f"emb-{request.node.name[-20:]}"


def test_it_starts_with_append_only_persistence_in_the_data_dir(data_dir: Path) -> None:
    with EmbeddedRedis(data_dir) as server:
        assert server.url == f"redis+socket://{data_dir}/redis.sock"
        config = client(server).config_get("append*")
        assert (config["appendonly"], config["appendfsync"]) == ("yes", "everysec")
        assert client(server).config_get("port")["port"] == "0"  # no TCP port at all
    assert (data_dir / "appendonly.aof").exists()


def test_data_survives_a_kill_9_of_the_server(data_dir: Path) -> None:
    server = EmbeddedRedis(data_dir)
    process = server.start()
    client(server).set("accepted", "task")
    time.sleep(1.5)  # appendfsync everysec
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert server.socket.exists()  # left behind, as after any crash
    with EmbeddedRedis(data_dir) as again:
        assert client(again).get("accepted") == "task"


def test_a_stale_socket_and_pid_file_do_not_stop_the_next_start(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "redis.sock").write_text("")
    (data_dir / "redis.pid").write_text(str(os.getpid()))
    with EmbeddedRedis(data_dir) as server:
        assert client(server).ping()


def test_a_second_server_on_the_same_data_dir_is_refused(data_dir: Path) -> None:
    with EmbeddedRedis(data_dir), pytest.raises(KingtaskError, match="already runs"):
        EmbeddedRedis(data_dir).start()


def test_a_data_dir_too_long_for_a_socket_is_refused() -> None:
    with pytest.raises(ConfigError, match="too long"):
        EmbeddedRedis("/tmp/" + "d" * 120)
