"""The protocol files: wire contract, generated code freshness, import hygiene."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, shared_dir

CHECK_PROTOS = shared_dir() / "contract" / "check-protos"


@pytest.mark.skipif(not CHECK_PROTOS.exists(), reason=f"{CHECK_PROTOS} is not on this machine")
def test_protos_match_the_upstream_wire_contract() -> None:
    result = subprocess.run([str(CHECK_PROTOS), str(REPO_ROOT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "items match" in result.stdout


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "remote_apis_protos.generate", "--check"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_all_modules_load_into_one_pool_without_googleapis_longrunning() -> None:
    """Ours and googleapis' longrunning define the same messages; only ours may load."""
    code = (
        "import sys, importlib, pathlib\n"
        "root = pathlib.Path('remote_apis_protos')\n"
        "for p in sorted(root.rglob('*_pb2*.py')):\n"
        "    importlib.import_module('.'.join(p.with_suffix('').parts))\n"
        "import cas.digest, server.app\n"
        "bad = [m for m in sys.modules if m.startswith('google.longrunning')]\n"
        "assert not bad, bad\n"
        "from google.protobuf import descriptor_pool\n"
        "pool = descriptor_pool.Default()\n"
        "assert pool.FindFileContainingSymbol('google.longrunning.Operation').name == 'google/longrunning/operations.proto'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
