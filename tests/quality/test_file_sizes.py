"""The code-shape rule of docs/ARCHITECTURE.md ("Where new things go"): no source file
in cas/, server/ or worker/ over 400 lines (a file that outgrows it is split, not
stretched)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400


def test_no_source_file_is_over_the_limit() -> None:
    too_long = {
        str(path.relative_to(REPO_ROOT)): lines
        for package in ("cas", "server", "worker")
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}, f"over {MAX_LINES} lines: {too_long}"
