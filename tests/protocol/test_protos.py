"""The protocol files: wire contract, generated code freshness, import hygiene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.shared import CHECK_PROTOS, SharedFileMissing, shared_file

try:
    check_protos: Path | None = shared_file(CHECK_PROTOS)
    not_here = ""
except SharedFileMissing as missing:
    check_protos, not_here = None, str(missing)


@pytest.mark.skipif(check_protos is None, reason=not_here)
def test_protos_match_the_upstream_wire_contract() -> None:
    assert check_protos is not None
    result = subprocess.run([str(check_protos), str(REPO_ROOT)], capture_output=True, text=True, timeout=120)
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
