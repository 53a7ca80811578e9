"""The [worker] table and the command line that overrides it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cas.config import ConfigError
from worker.app import config_from_args, parse_args
from worker.app import main as worker_main
from worker.config import WorkerConfig, load_worker_config, parse_worker_table, target_of


def test_defaults_live_under_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = WorkerConfig()
    assert config.server == "grpc://127.0.0.1:8980"
    assert config.cache_dir == tmp_path / "reapi" / "worker" / "cache"
    assert config.work_dir.parent == config.cache_dir.parent  # same filesystem: hardlinks work
    assert config.concurrency >= 1


def test_a_full_table() -> None:
    config = parse_worker_table({
        "server": "grpcs://build:443", "instance_name": "main", "concurrency": 8, "cache_dir": "/c",
        "work_dir": "/w", "cache_max_size": "2GiB", "properties": {"ISA": ["arm-a64"], "pool": "big"},
        "default_path": "/bin", "default_timeout": 60, "max_timeout": 600, "kill_grace": 1.5,
        "live_log_interval": 0.05, "drain_timeout": 10, "bot_id": "w1", "call_timeout": 30,
        "inline_blob_limit": "64KiB", "busy_call_delay": 0,
    })
    assert config.concurrency == 8 and config.cache_max_size == 2 << 30
    assert config.inline_blob_limit == 64 << 10 and config.busy_call_delay == 0.0
    assert config.properties == {"ISA": ["arm-a64"], "pool": ["big"]}
    assert config.cache_dir == Path("/c") and config.max_timeout == 600.0
    assert target_of(config.server) == ("build:443", True)


@pytest.mark.parametrize("table, message", [
    ({"colour": "red"}, r"\[worker\]: unknown key 'colour'"),
    ({"concurrency": 0}, "concurrency"),
    ({"concurrency": True}, "concurrency"),
    ({"server": "http2://x"}, "grpc://"),
    ({"default_timeout": -1}, "positive"),
    ({"properties": {"ISA": [1]}}, "strings"),
    ({"cache_max_size": "lots"}, "not a size"),
    ({"inline_blob_limit": -1}, "inline_blob_limit"),
    ({"busy_call_delay": -0.5}, "busy_call_delay"),
])
def test_mistakes_name_the_key(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_worker_table(table)


def test_command_line_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_text('[server]\nlisten = "ignored"\n[worker]\nconcurrency = 3\n[worker.properties]\npool = "big"\n')
    assert load_worker_config(path).concurrency == 3
    args = parse_args(["--config", str(path), "--server", "grpc://h:1", "--concurrency", "5",
                       "--property", "ISA=arm-a64", "--cache-dir", str(tmp_path / "c"), "--instance", "i"])
    config = config_from_args(args)
    assert (config.server, config.concurrency, config.instance_name) == ("grpc://h:1", 5, "i")
    assert config.properties == {"pool": ["big"], "ISA": ["arm-a64"]}
    assert config.cache_dir == tmp_path / "c"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config_from_args(parse_args(["--property", "novalue"]))
    with pytest.raises(ConfigError, match=str(path)):
        path.write_text("[worker]\nconcurrency = 'many'\n")
        load_worker_config(path)


@pytest.mark.parametrize(("text", "message"), [
    ("[worker]\nconcurency = 2\n", "[worker]: unknown key 'concurency' (did you mean 'concurrency'? known: server, "),
    ("[wroker]\nconcurrency = 2\n", "unknown section [wroker] (did you mean [worker]?"),
    ("[worker]\nconcurrency = 'many'\n", "[worker] key 'concurrency': expected a whole number, got 'many'"),
    ("[worker]\nkill_grace = 0\n", "[worker] key 'kill_grace': must be positive, got 0"),
    ("[worker]\ncache_dir = 3\n", "[worker] key 'cache_dir': expected a path, got 3"),
    ("[worker]\nserver = 'http2://x'\n", "[worker]: server 'http2://x': use grpc://HOST:PORT or grpcs://HOST:PORT"),
    ("[worker.properties]\nISA = [1]\n", "[worker.properties] key 'ISA': expected a string or a list of strings, got [1]"),
    ("[worker]\nproperties = 'pool=big'\n", "[worker.properties] must be a table, got 'pool=big'"),
    ("[worker]\nserver = '${REAPI_TEST_UNSET}'\n", "[worker] key 'server': environment variable REAPI_TEST_UNSET is not set"),
])
def test_file_mistakes_name_the_file_section_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_worker_config(path)
    assert str(caught.value).startswith(f"{path}: {message}")
    assert "\n" not in str(caught.value)


def test_durations_and_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REAPI_TEST_SERVER", "build:8980")
    path = tmp_path / "worker.toml"
    path.write_text('[worker]\nserver = "grpc://${REAPI_TEST_SERVER}"\nmax_timeout = "1h"\ndrain_timeout = "90s"\n'
                    'cache_dir = "${REAPI_TEST_SERVER}$$/c"\n')
    config = load_worker_config(path)
    assert config.server == "grpc://build:8980"
    assert (config.max_timeout, config.drain_timeout) == (3600.0, 90.0)
    assert config.cache_dir == Path("build:8980$/c")


def test_the_cli_prints_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "worker.toml"
    path.write_text("[worker]\nconcurency = 2\n")
    assert worker_main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"reapi-worker: configuration error: {path}: [worker]: unknown key 'concurency' "
                          "(did you mean 'concurrency'? known: ")
    assert err.count("\n") == 1
