"""server/config.py: the TOML file's [server] and [[instances]] parts, and the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from cas.config import ConfigError
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
