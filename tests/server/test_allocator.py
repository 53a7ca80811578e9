"""The served process's allocator settings apply (glibc), in a process of their own."""

from __future__ import annotations

import subprocess
import sys


def test_tune_allocator_applies_on_glibc() -> None:
    # In a child process: the settings are process-wide and the test process keeps glibc's defaults.
    code = "from server.allocator import tune_allocator; print(tune_allocator())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "True", result.stderr
