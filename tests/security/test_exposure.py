"""A server refuses to listen beyond loopback without TLS and authentication, unless
``allow_insecure = true``; the command line's --tls-* and --auth-tokens flags secure it;
every example config in deploy/ passes the check as written."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cas.config import ConfigError
from server.auth.exposure import check_exposure, is_loopback
from server.config import load_config
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("listen", ["127.0.0.1:8980", "127.0.0.2:1", "[::1]:8980", "localhost:8980", "unix:/tmp/s"])
def test_loopback_needs_nothing(listen: str) -> None:
    assert is_loopback(listen)
    check_exposure(listen, tls=False, auth=False, allow_insecure=False)


@pytest.mark.parametrize(("tls", "auth", "missing"), [
    (False, False, "without TLS and authentication"),
    (True, False, "without authentication"),
    (False, True, "without TLS"),
])
@pytest.mark.parametrize("listen", ["0.0.0.0:8980", ":8980", "[::]:8980", "10.0.0.5:8980", "build.example.com:8980"])
def test_beyond_loopback_needs_tls_and_authentication(listen: str, tls: bool, auth: bool, missing: str) -> None:
    assert not is_loopback(listen)
    with pytest.raises(ConfigError) as caught:
        check_exposure(listen, tls=tls, auth=auth, allow_insecure=False)
    assert f"refusing to listen on {listen} {missing}" in str(caught.value)
    assert "allow_insecure = true" in str(caught.value)
    check_exposure(listen, tls=True, auth=True, allow_insecure=False)


def test_allow_insecure_starts_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="reapi.server.auth"):
        check_exposure("0.0.0.0:8980", tls=False, auth=False, allow_insecure=True)
    assert "without TLS and authentication (allow_insecure = true)" in caplog.text


def test_the_command_line_refuses_an_open_port_with_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "server.app", "--listen", "0.0.0.0:0", "--no-local-worker"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2, result
    assert "configuration error: refusing to listen on 0.0.0.0:0 without TLS and authentication" in result.stderr
    half = subprocess.run([sys.executable, "-m", "server.app", "--tls-cert", str(tmp_path / "c.pem")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert half.returncode == 2 and "cert and key go together" in half.stderr, half


SERVER_CONFIGS = sorted(p for p in (REPO_ROOT / "deploy" / "configs").glob("*.toml")
                        if "stores" in tomllib.loads(p.read_text()))


@pytest.mark.parametrize("path", SERVER_CONFIGS, ids=lambda p: p.name)
def test_every_example_config_passes_the_check_as_written(path: Path) -> None:
    config = load_config(path)
    check_exposure(config.listen, config.tls.enabled, config.auth.enabled, config.allow_insecure)
