"""Fixtures for end-to-end tests with the real Bazel client.

One Bazel installation and one copy of the sample workspace per session (starting
a Bazel server and configuring its C++ toolchain costs seconds); every Bazel
server is shut down at the end. ``local_build`` is the reference that remote
builds must match byte for byte: the sample workspace built and tested with no
remote at all.

Tests that use the ``bazel`` fixture are marked ``bazel`` (``pytest -m 'not bazel'`` leaves
them out on purpose). Where Bazel cannot be set up they fail with the reason: `make
test` installs it, and a skipped end-to-end test would prove nothing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.bazel import (
    BazelInstallation,
    BazelRun,
    BazelUnavailable,
    BazelWorkspace,
    fast_tmp_root,
    remove_tree,
)
from tests.support.bazel_outputs import OutputSnapshot

SAMPLE_WORKSPACE = Path(__file__).resolve().parent / "workspace"
# What `bazel test //...` runs in the sample workspace (the failing test is manual).
SAMPLE_TESTS = ("//cc:greet_test", "//sh:big_output_test", "//sh:greeting_test", "//sh:sharded_test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "bazel" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.bazel)


@pytest.fixture(scope="session")
def bazel_session_root() -> Iterator[Path]:
    """All Bazel state of this session, on tmpfs when there is one; removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="reapi-bazel-", dir=fast_tmp_root()))
    try:
        yield root
    finally:
        remove_tree(root)


@pytest.fixture(scope="session")
def bazel(bazel_session_root: Path) -> Iterator[BazelInstallation]:
    try:
        installation = BazelInstallation.find(bazel_session_root)
    except BazelUnavailable as exc:
        pytest.fail(
            f"Bazel end-to-end tests cannot run: {exc}. `make test` installs Bazel (as root on Debian); "
            "to leave these tests out on purpose, run pytest with -m 'not bazel'",
            pytrace=False,
        )
    try:
        yield installation
    finally:
        installation.shutdown_all()


@pytest.fixture(scope="session")
def sample_workspace(bazel: BazelInstallation, bazel_session_root: Path) -> BazelWorkspace:
    """The session's copy of tests/e2e/workspace. Tests may run `clean` but not edit it."""
    return bazel.workspace(SAMPLE_WORKSPACE, bazel_session_root / "sample")


@dataclass(frozen=True)
class LocalBuild:
    run: BazelRun
    outputs: OutputSnapshot


@pytest.fixture(scope="session")
def local_build(sample_workspace: BazelWorkspace) -> LocalBuild:
    """`bazel test //...` with no remote at all, from clean: the reference outputs."""
    sample_workspace.clean()
    run = sample_workspace.test("//...")
    return LocalBuild(run, sample_workspace.outputs())
