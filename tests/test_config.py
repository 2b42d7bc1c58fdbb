"""Configuration: the seed's YAML files, kingtask's keys, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from kingtask import config
from kingtask.errors import ConfigError

from .conftest import ROOT


def test_the_seeds_sample_files_are_read_as_they_are() -> None:
    settings = config.load([ROOT / "etc" / "broker.yaml", ROOT / "etc" / "worker.yaml"], env={})
    assert settings.addr == "0.0.0.0:9595"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert (settings.period, settings.result_keep_time, settings.task_run_time) == (1, 1000, 30)
    assert settings.log_level == "debug"


def test_defaults_use_the_embedded_redis_in_the_data_dir(tmp_path: Path) -> None:
    settings = config.load(env={"KINGTASK_DATA_DIR": str(tmp_path)})
    assert settings.uses_embedded_redis
    assert settings.redis_url == f"redis+socket://{tmp_path}/redis.sock"
    assert settings.addr == "127.0.0.1:9595"


def test_later_files_override_earlier_ones(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("redis: 10.0.0.1:6379\nperiod: 2\n")
    (tmp_path / "b.yaml").write_text("redis: 10.0.0.2:6380/3\n")
    settings = config.load([tmp_path / "a.yaml", tmp_path / "b.yaml"], env={})
    assert (settings.redis_url, settings.period) == ("redis://10.0.0.2:6380/3", 2)


def test_the_environment_overrides_files(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text("bin_path: /srv/bin\nredis: 10.0.0.1:6379\naddr: 0.0.0.0:1\n")
    env = {
        "KINGTASK_CONFIG": str(tmp_path / "w.yaml"),
        "KINGTASK_BIN_PATH": "/opt/tasks",
        "REDIS_URL": "redis://r:1/2",
        "PORT": "8000",
        "KINGTASK_TASK_ENV": "PATH, HOME",
    }
    settings = config.load(env=env)
    assert (settings.bin_path, settings.redis_url, settings.addr) == (
        "/opt/tasks",
        "redis://r:1/2",
        "0.0.0.0:8000",
    )
    assert settings.task_env == ("PATH", "HOME")
    assert (
        config.load(env={**env, "KINGTASK_REDIS_URL": "redis://k:1/0"}).redis_url == "redis://k:1/0"
    )
    assert config.load(env={**env, "KINGTASK_ADDR": "127.0.0.1:1"}).addr == "127.0.0.1:1"


@pytest.mark.parametrize(
    ("value", "url"),
    [("127.0.0.1:6379", "redis://127.0.0.1:6379/0"), ("redis.local:6380/2", "redis://redis.local:6380/2"),
     ("[::1]:6379", "redis://[::1]:6379/0"), ("redis://:pw@h:1/0", "redis://:pw@h:1/0"),
     ("rediss://h:1/0", "rediss://h:1/0"), ("unix:///run/r.sock", "redis+socket:///run/r.sock"),
     ("redis+socket:///run/r.sock", "redis+socket:///run/r.sock"),
     ("sentinel://h:26379", "sentinel://h:26379")],
)  # fmt: skip
def test_redis_takes_host_port_db_or_a_url(value: str, url: str) -> None:
    assert config.redis_url(value, "var") == url


@pytest.mark.parametrize("value", ["localhost", "h:port", "http://h:1", "h:1/x"])
def test_a_malformed_redis_address_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="redis"):
        config.redis_url(value, "var")


@pytest.mark.parametrize(
    ("text", "message"),
    [("nonsense: 1\n", "unknown key 'nonsense'"), ("period: -1\n", "period"),
     ("task_run_time: soon\n", "task_run_time"), ("- a\n- b\n", "mapping"), ("a: [\n", "YAML"),
     ("timezone: Mars/Olympus\n", "time zone"), ("addr: nowhere\n", "host:port"),
     ("redis: nowhere\n", "redis"), ("flower_addr: x\n", "host:port")],
)  # fmt: skip
def test_bad_files_get_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.load([tmp_path / "bad.yaml"], env={})


def test_a_missing_file_gets_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load([tmp_path / "missing.yaml"], env={})


def test_parse_addr_splits_host_and_port() -> None:
    assert config.parse_addr("127.0.0.1:9595") == ("127.0.0.1", 9595)
    assert config.parse_addr(":80") == ("0.0.0.0", 80)
    assert config.parse_addr("[::1]:80") == ("::1", 80)


def test_sentinel_urls_name_the_sentinels_and_the_masters_db_and_password() -> None:
    sentinels = config.parse_sentinels("sentinel://:s%40cret@h1:26379/2;sentinel://h2:26380")
    assert sentinels == config.Sentinels((("h1", 26379), ("h2", 26380)), 2, None, "s@cret")


@pytest.mark.parametrize(
    "value", ["sentinel://h1", "sentinel://h1:1;redis://h2:2", "sentinel://h:1/x", "sentinel://:1"]
)
def test_a_malformed_sentinel_list_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="sentinel://host:port"):
        config.load(env={"KINGTASK_REDIS": value, "KINGTASK_SENTINEL_MASTER": "m"})


def test_sentinels_without_a_master_name_are_refused() -> None:
    with pytest.raises(ConfigError, match="sentinel_master"):
        config.load(env={"KINGTASK_REDIS": "sentinel://h1:26379"})
    settings = config.load(
        env={"KINGTASK_REDIS": "sentinel://h:1", "KINGTASK_SENTINEL_MASTER": "m"}
    )
    assert settings.sentinels == config.Sentinels((("h", 1),))
