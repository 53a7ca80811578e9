"""server/config.py: the TOML file's [server] and [[instances]] parts, and the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from cas.config import ConfigError
from server.app import main as server_main
from server.config import WILDCARD_INSTANCE, default_config, load_config, parse_config

STORES = {"cas": {"type": "memory"}, "ac": {"type": "memory"}}


def config(**overrides: object) -> dict:
    data: dict = {"stores": dict(STORES), "instances": [{"name": "", "cas": "cas", "ac": "ac"}]}
    data.update(overrides)
    return data


def test_a_minimal_config_parses_with_defaults() -> None:
    parsed = parse_config(config())
    assert parsed.listen == "127.0.0.1:8980"
    assert parsed.max_batch_total_size_bytes == 4 << 20
    assert [(i.name, i.cas, i.ac, i.ac_update_enabled) for i in parsed.instances] == [("", "cas", "ac", True)]


def test_the_zero_config_serves_every_instance_name() -> None:
    parsed = default_config()
    assert [i.name for i in parsed.instances] == [WILDCARD_INSTANCE]
    assert {"cas", "ac"} <= set(parsed.stores)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stores": {}}, "defines no [stores.NAME]"),
        (config(instances=[]), "defines no [[instances]]"),
        (config(instances=[{"name": "a", "cas": "nope", "ac": "ac"}]), "cas = 'nope' is not defined"),
        (config(instances=[{"name": "a", "cas": "cas", "ac": "ac", "colour": 1}]), "[[instances]] #1: unknown key 'colour'"),
        (config(instances=[{"name": "a", "cas": "cas", "ac": "ac", "scheduler": "main"}]), "per-instance schedulers"),
        (
            config(instances=[{"name": "a", "cas": "cas", "ac": "ac"}, {"name": "a", "cas": "cas", "ac": "ac"}]),
            "instance names defined twice: ['a']",
        ),
        (config(server={"max_batch_total_size_bytes": "1MiB"}), "below the 4MiB"),
        (config(server={"max_batch_total_size_bytes": "lots"}), "is not a size"),
        (config(server="x"), "[server] must be a table"),
    ],
)
def test_mistakes_are_named(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert message in str(caught.value)


def test_a_toml_file_is_read_and_its_errors_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[server]\nlisten = "0.0.0.0:9000"\nmax_batch_total_size_bytes = "8MiB"\n'
        '[stores.cas]\ntype = "memory"\n[stores.ac]\ntype = "memory"\n'
        '[[instances]]\nname = "main"\ncas = "cas"\nac = "ac"\nac_update_enabled = false\n'
    )
    parsed = load_config(good)
    assert parsed.listen == "0.0.0.0:9000"
    assert parsed.max_batch_total_size_bytes == 8 << 20
    assert parsed.instances[0].ac_update_enabled is False
    bad = tmp_path / "bad.toml"
    bad.write_text("[stores\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="missing.toml"):
        load_config(tmp_path / "missing.toml")


# -- unknown keys and sections, wrong types: one clear line each ----------------------

GOOD_FILE = '[stores.m]\ntype = "memory"\n[[instances]]\ncas = "m"\nac = "m"\n'


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[server]\nlistn = "0.0.0.0:1"\n',
         "[server]: unknown key 'listn' (did you mean 'listen'? known: listen, max_batch_total_size_bytes, compressors, compressed_cache_size, http_listen, "
         "idle_upload_memory, allow_insecure, tls, auth, event_loop)"),
        ("[stores.n]\ntype = 'memory'\nmax_sise = 1\n", "store 'n' (memory): unknown key 'max_sise' (did you mean 'max_size'?"),
        ("[[instances]]\nname = 'x'\ncas = 'm'\nac = 'm'\nac_update = false\n",
         "[[instances]] #2: unknown key 'ac_update' (did you mean 'ac_update_enabled'?"),
        ("[execution]\nmax_retry = 1\n", "[execution]: unknown key 'max_retry' (did you mean 'max_retries'?"),
        ("[assets]\nallowed_host = []\n", "[assets]: unknown key 'allowed_host' (did you mean 'allowed_hosts'?"),
        ("[local_worker]\nenable = true\n", "[local_worker]: unknown key 'enable' (did you mean 'enabled'?"),
        ("[srever]\nlisten = 'x'\n", "unknown section [srever] (did you mean [server]? known: [server], [stores.NAME], "
         "[[instances]], [execution], [assets], [local_worker], [worker])"),
        ("[store.x]\ntype = 'memory'\n", "unknown section [store] (did you mean [stores.NAME]?"),
        ("[server]\nlisten = 8980\n", "[server] key 'listen': expected a string, got 8980"),
        ("[stores.n]\ntype = 'memory'\nmax_size = true\n", "store 'n' key 'max_size': expected a size, got True"),
        ("[[instances]]\nname = 'x'\ncas = 'm'\nac = 'm'\nac_update_enabled = 'no'\n",
         "[[instances]] #2 key 'ac_update_enabled': expected true or false, got 'no'"),
        ("[execution]\nmax_retries = '3'\n", "[execution] key 'max_retries': expected a whole number, got '3'"),
        ("[execution]\ndefault_matching = 'exakt'\n",
         "[execution] key 'default_matching': unknown matching policy 'exakt' (did you mean 'exact'? known: exact, all_of, minimum, ignore)"),
        ("[execution.platform]\nISA = 3\n", "[execution.platform] key 'ISA': unknown matching policy 3"),
        ("[execution]\nplatform = 'ignore'\n", "[execution.platform] must be a table, got 'ignore'"),
        ("[execution]\nstate = 'redis'\nredis_url = 'redis://127.0.0.1:1/0'\ndispatch = 'locality'\n"
         "locality_wait = 0.5\n",
         '[execution]: locality_wait is not supported with state = "redis" (the bounded wait is the memory state'),
        ("[assets]\nallow_push = 'no'\n", "[assets] key 'allow_push': expected true or false, got 'no'"),
        ("[local_worker]\nargs = '--x'\n", "[local_worker] key 'args': expected a list of strings, got '--x'"),
        ("[local_worker]\nconcurrency = 0\n", "[local_worker] key 'concurrency': must be at least 1, got 0"),
        ("listen = '0.0.0.0:1'\n", "top-level key 'listen' belongs in a section"),
    ],
)
def test_file_mistakes_name_the_file_section_and_key(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "server.toml"
    path.write_text(extra + GOOD_FILE if extra.startswith("listen") else GOOD_FILE + extra)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {message}")
    assert "\n" not in str(caught.value)


def test_the_cli_prints_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "server.toml"
    path.write_text('[server]\nlistn = "0.0.0.0:1"\n' + GOOD_FILE)
    assert server_main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"reapi-server: configuration error: {path}: [server]: unknown key 'listn' "
                   "(did you mean 'listen'? known: listen, max_batch_total_size_bytes, compressors, "
                   "compressed_cache_size, http_listen, idle_upload_memory, allow_insecure, tls, auth, event_loop)\n")


def test_a_worker_table_in_the_servers_file_is_the_workers(tmp_path: Path) -> None:
    path = tmp_path / "both.toml"
    path.write_text(GOOD_FILE + '[worker]\nconcurrency = 2\n')
    assert [i.cas for i in load_config(path).instances] == ["m"]


def test_string_values_take_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REAPI_TEST_LISTEN", "0.0.0.0:9100")
    monkeypatch.setenv("REAPI_TEST_STORE", "m")
    path = tmp_path / "env.toml"
    path.write_text('[server]\nlisten = "${REAPI_TEST_LISTEN}"\n[stores.m]\ntype = "memory"\n'
                    '[[instances]]\nname = "cost$$"\ncas = "${REAPI_TEST_STORE}"\nac = "m"\n')
    parsed = load_config(path)
    assert parsed.listen == "0.0.0.0:9100"
    assert (parsed.instances[0].name, parsed.instances[0].cas) == ("cost$", "m")
    monkeypatch.delenv("REAPI_TEST_LISTEN")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (f"{path}: [server] key 'listen': environment variable REAPI_TEST_LISTEN is not set "
                                 "(used as ${REAPI_TEST_LISTEN})")


def test_the_compressors_and_the_cache_of_compressed_forms(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('[server]\ncompressors = ["zstd"]\ncompressed_cache_size = "8MiB"\n' + GOOD_FILE)
    config = load_config(path)
    assert [c.value for c in config.compressors] == ["zstd"] and config.compressed_cache_size == 8 << 20
    assert [c.value for c in load_config(None).compressors] == ["zstd", "deflate"]
    path.write_text('[server]\ncompressors = ["zstd", "lz4"]\n' + GOOD_FILE)
    with pytest.raises(ConfigError, match="compressors.*'lz4'"):
        load_config(path)


def test_the_event_loop_is_uvloop_unless_asyncio_is_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    assert load_config(None).event_loop.value == "uvloop"
    path.write_text('[server]\nevent_loop = "asyncio"\n' + GOOD_FILE)
    assert load_config(path).event_loop.value == "asyncio"
    path.write_text('[server]\nevent_loop = "tokio"\n' + GOOD_FILE)
    with pytest.raises(ConfigError, match="event_loop.*'tokio'.*uvloop, asyncio"):
        load_config(path)
