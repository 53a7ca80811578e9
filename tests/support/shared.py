"""Where the workplace's shared folder is (wire-contract checker, offline Bazel setup).

The search, the same here and in deploy/bootstrap.sh: $REAPI_SHARED_DIR if set, then
a directory named ``shared`` beside the checkout (``../shared``), then beside each
ancestor of the checkout, nearest first (``../../shared``, ...; a CI clone placed
deeper still finds it). The first candidate that holds the wanted file wins; when
none does, the error names every place looked in.

    python -m tests.support.shared contract/check-protos   # its path, or where we looked
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "REAPI_SHARED_DIR"
CHECK_PROTOS = "contract/check-protos"
SETUP_OFFLINE_BAZEL = "bazel/setup-offline-bazel"


class SharedFileMissing(FileNotFoundError):
    """No candidate shared folder holds the file; the message says where we looked."""


def shared_dir_candidates(checkout: Path = REPO_ROOT, environ: Mapping[str, str] = os.environ) -> list[Path]:
    """The folders searched, in order (see the module docstring)."""
    candidates = [Path(environ[ENV_VAR])] if environ.get(ENV_VAR) else []
    candidates += [ancestor / "shared" for ancestor in checkout.parents]
    return candidates


def shared_file(relative: str, checkout: Path = REPO_ROOT, environ: Mapping[str, str] = os.environ) -> Path:
    """``relative`` (e.g. CHECK_PROTOS) in the first shared folder that holds it."""
    candidates = shared_dir_candidates(checkout, environ)
    for candidate in candidates:
        if (candidate / relative).exists():
            return (candidate / relative).resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise SharedFileMissing(f"{relative} is in no shared folder (looked in {looked}; set {ENV_VAR} to the folder)")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.support.shared RELATIVE_PATH", file=sys.stderr)
        return 2
    try:
        print(shared_file(argv[0]))
    except SharedFileMissing as missing:
        print(missing, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
