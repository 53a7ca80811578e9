"""mypy over cas, server, worker and the tests themselves (configured in pyproject.toml),
as part of the suite: a test helper with a wrong type hides the mistake it was written to catch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_mypy_finds_no_type_errors(tmp_path: Path) -> None:
    mypy = Path(sys.executable).parent / "mypy"
    result = subprocess.run(
        [str(mypy), "--cache-dir", str(tmp_path / "mypy-cache")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
