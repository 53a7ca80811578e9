"""tests/support/shared.py and deploy/bootstrap.sh find the shared folder the same way.

A fake checkout nested in a temporary tree, with ``shared`` folders beside some of its
ancestors: both searches must pick the same file, or fail naming the same places.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.shared import ENV_VAR, SharedFileMissing, shared_dir_candidates, shared_file


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """tmp/top/a/b/checkout, with shared folders beside b (../shared) and beside top."""
    tree = tmp_path.resolve()
    checkout = tree / "top" / "a" / "b" / "checkout"
    (checkout / "deploy").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "deploy" / "bootstrap.sh", checkout / "deploy" / "bootstrap.sh")
    for relative in ["top/a/b/shared/bazel/setup-offline-bazel", "top/a/b/shared/contract/other",
                     "shared/contract/check-protos", "shared/bazel/setup-offline-bazel", "elsewhere/contract/check-protos"]:
        (tree / relative).parent.mkdir(parents=True, exist_ok=True)
        (tree / relative).write_text("")
    (tree / "top" / "a" / "shared").mkdir()  # beside a, but empty
    return checkout


def python_answer(checkout: Path, want: str, environ: dict[str, str]) -> str:
    try:
        return str(shared_file(want, checkout, environ))
    except SharedFileMissing as missing:
        return f"missing: {missing}"


def bootstrap_answer(checkout: Path, want: str, environ: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR} | environ
    result = subprocess.run(
        ["bash", str(checkout / "deploy" / "bootstrap.sh"), "--find-shared", want],
        capture_output=True, text=True, env=env, timeout=30,
    )
    if result.returncode == 0:
        return str(Path(result.stdout.strip()).resolve())
    return "missing: " + result.stderr.strip().removeprefix("bootstrap: ")


@pytest.mark.parametrize(
    ("want", "env_dir", "expected"),
    [
        ("bazel/setup-offline-bazel", None, "top/a/b/shared"),  # beside the checkout comes first
        ("contract/check-protos", None, "shared"),  # further up, past folders without it
        ("contract/check-protos", "elsewhere", "elsewhere"),  # the environment comes first
        ("bazel/setup-offline-bazel", "elsewhere", "top/a/b/shared"),  # ... if it holds the file
        ("no/such/file", "elsewhere", None),
    ],
)
def test_both_searches_find_the_same_file(
    checkout: Path, want: str, env_dir: str | None, expected: str | None
) -> None:
    tree = checkout.parents[3]
    environ = {ENV_VAR: str(tree / env_dir)} if env_dir else {}
    answer = python_answer(checkout, want, environ)
    assert bootstrap_answer(checkout, want, environ) == answer
    if expected is not None:
        assert answer == str(tree / expected / want)
    else:
        looked = ", ".join(str(c) for c in shared_dir_candidates(checkout, environ))
        assert answer == f"missing: {want} is in no shared folder (looked in {looked}; set {ENV_VAR} to the folder)"
        assert str(tree / "top" / "a" / "shared") in looked and str(tree / "elsewhere") in looked


def test_candidates_go_from_the_environment_up_the_ancestors(tmp_path: Path) -> None:
    checkout = tmp_path / "x" / "y"
    assert shared_dir_candidates(checkout, {ENV_VAR: "/env"})[:3] == [Path("/env"), tmp_path / "x" / "shared", tmp_path / "shared"]
    assert shared_dir_candidates(checkout, {})[-1] == Path("/shared")
