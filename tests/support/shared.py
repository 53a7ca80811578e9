"""Where the workplace's shared folder is (wire-contract checker, offline Bazel setup).

It sits beside the checkout (``../shared``) on development machines; a CI clone may
live elsewhere, so $REAPI_SHARED_DIR and the workplace's fixed location are tried
too. deploy/bootstrap.sh searches the same places.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKPLACE_SHARED = Path("/work/shared")


def shared_dir() -> Path:
    """The first candidate that holds the contract checker, else the conventional one."""
    candidates = [Path(p) for p in [os.environ.get("REAPI_SHARED_DIR")] if p]
    candidates += [REPO_ROOT.parent / "shared", WORKPLACE_SHARED]
    for candidate in candidates:
        if (candidate / "contract" / "check-protos").exists():
            return candidate.resolve()
    return candidates[0].resolve()
