"""Drive the real Bazel client (Debian's bazel-bootstrap, 4.2.3) in end-to-end tests.

Reused by every test that points Bazel at reapi: the remote cache (tests/e2e),
remote execution (next to a worker process) and the remote downloader. The pieces:

``BazelInstallation.find(session_root)``
    Locates ``bazel`` and runs the shared ``setup-offline-bazel`` script (found by
    tests.support.shared.shared_file) for the rc that makes builds work with no
    network. Raises ``BazelUnavailable`` with the reason when either is missing.
    One per test session: every workspace shares its ``output_user_root``, so the
    Bazel install and its JDK are unpacked once. ``shutdown_all()`` at session end
    stops every Bazel server it started (they would otherwise idle for hours).

``installation.workspace(template, name)`` -> ``BazelWorkspace``
    A private copy of a workspace directory (e.g. tests/e2e/workspace). Each copy
    has its own output base and Bazel server; reuse one copy across tests where you
    can, since a new one costs a few seconds of server start and C++ autoconfig.
    ``ws.write(relpath, text)`` adds or replaces files, for tests that must put a
    port into a WORKSPACE or BUILD file (the remote downloader's http_archive URL).

``ws.run("test", "//...", flags=remote_cache_flags(url, instance))`` -> ``BazelRun``
    Runs one command and returns its output and exit code, with the process summary
    parsed (``run.summary.count("remote cache hit")``). ``check=True`` (the default)
    raises ``BazelFailed`` with the tail of Bazel's output if the exit code is not
    the expected one; pass ``expect_exit=3`` to assert a test failure instead.
    ``ws.clean()`` empties the output tree and Bazel's local action cache.
    ``ws.outputs()`` snapshots bazel-bin (content hashes, symlink targets, tree
    artifact contents) for byte-for-byte comparison of two builds.

Isolation: every command gets ``--disk_cache=`` and ``--repository_cache=`` (both
off), because Bazel 4 reports a disk cache hit as "remote cache hit" and would hide
a miss; ``--nohome_rc`` keeps a developer's ~/.bazelrc out;
``--incompatible_strict_action_env`` makes action keys independent of the test
runner's PATH, so keys agree between local builds, remote caching and remote
execution. Split test.xml generation stays on (Bazel's default): turning it off
makes test-setup.sh pipe output through a ``tee`` that is killed when the test
exits, truncating test logs on a loaded machine. Its cost is that the test.xml
action carries the test's duration in whole seconds on its command line, so it
may miss the cache on a rerun; tests that demand all hits allow exactly that
action (see ``tests/support/bazel_execlog.py``).

Flag helpers: ``remote_cache_flags``, ``remote_execution_flags`` (with
``--spawn_strategy=remote`` and exec properties) and ``remote_downloader_flags``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.bazel_outputs import OutputSnapshot, snapshot_tree
from tests.support.bazel_tls import tcnative_startup_options
from tests.support.bazel_summary import ProcessSummary
from tests.support.shared import SETUP_OFFLINE_BAZEL, SharedFileMissing, shared_file

REPO_ROOT = Path(__file__).resolve().parents[2]
# A command that takes longer than this has hung (a stuck remote call, usually).
COMMAND_TIMEOUT_S = 300.0
# Bazel servers exit by themselves this long after their last command, in case a
# test run is killed before it can shut them down.
MAX_IDLE_SECS = 120

# Every command: no local caches that could pass for the remote one, no user rc.
ISOLATION_FLAGS = (
    "--disk_cache=",
    "--repository_cache=",
    "--incompatible_strict_action_env",
    "--color=no",
    "--curses=no",
    "--show_progress_rate_limit=5",
    "--verbose_failures",
    "--test_output=errors",
)
# Commands that accept build options (others, like clean and shutdown, reject them).
BUILD_COMMANDS = frozenset({"build", "test", "run", "coverage", "fetch", "sync", "cquery", "aquery"})
# Variables that change where or how Bazel runs when it is itself run under a test.
SCRUBBED_ENV = ("TEST_TMPDIR", "TEST_SRCDIR", "BUILD_WORKSPACE_DIRECTORY", "BUILD_WORKING_DIRECTORY")


class BazelUnavailable(RuntimeError):
    """Bazel or its offline setup is missing on this machine; the message says which."""


class BazelFailed(AssertionError):
    """A Bazel command ended with an unexpected exit code."""


def fast_tmp_root() -> Path:
    """A tmpfs when there is one: Bazel writes thousands of small files."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(os.environ.get("TMPDIR", "/tmp"))


def remote_cache_flags(url: str, instance_name: str = "") -> list[str]:
    """Flags for ``--remote_cache``; ``url`` like grpc://127.0.0.1:PORT."""
    flags = [f"--remote_cache={url}", "--remote_timeout=60"]
    if instance_name:
        flags.append(f"--remote_instance_name={instance_name}")
    return flags


def remote_execution_flags(
    url: str, instance_name: str = "", exec_properties: Iterable[str] = ("OSFamily=linux",)
) -> list[str]:
    """Flags for running every action remotely on ``url`` (a server with workers)."""
    flags = [f"--remote_executor={url}", "--spawn_strategy=remote", "--remote_timeout=120"]
    flags += [f"--remote_default_exec_properties={p}" for p in exec_properties]
    if instance_name:
        flags.append(f"--remote_instance_name={instance_name}")
    return flags


def remote_downloader_flags(url: str, instance_name: str = "") -> list[str]:
    """Flags that send http_archive / http_file downloads to ``url`` as FetchBlob calls."""
    flags = [f"--experimental_remote_downloader={url}"]
    if instance_name:
        flags.append(f"--remote_instance_name={instance_name}")
    return flags


@dataclass
class BazelRun:
    """One finished Bazel command."""

    args: list[str]
    exit_code: int
    output: str  # stdout and stderr, interleaved as Bazel wrote them

    @property
    def summary(self) -> ProcessSummary:
        return ProcessSummary.parse(self.output)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def warnings(self) -> list[str]:
        """Distinct WARNING/ERROR lines, each joined with the line after it.

        Bazel reports remote cache trouble as "WARNING: Writing to Remote Cache:"
        with the cause (the gRPC status) on the next line, then a stack trace.
        """
        lines = self.output.splitlines()
        found: dict[str, None] = {}
        for i, line in enumerate(lines):
            if line.startswith(("WARNING:", "ERROR:")):
                cause = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].startswith(("java", "io.")) else ""
                found[f"{line} {cause}".strip()] = None
        return list(found)


@dataclass
class BazelInstallation:
    """The bazel binary, its offline rc, and one output_user_root for a test session."""

    binary: Path
    bazelrc: Path
    output_user_root: Path
    workspaces: list[BazelWorkspace] = field(default_factory=list)
    extra_startup_options: list[str] = field(default_factory=list)  # OpenSSL for grpcs:// (bazel_tls.py)

    @classmethod
    def find(cls, session_root: Path) -> BazelInstallation:
        """Locate bazel and prepare the offline rc; ``session_root`` holds all state."""
        try:
            setup = shared_file(SETUP_OFFLINE_BAZEL)
        except SharedFileMissing as missing:
            raise BazelUnavailable(str(missing)) from None
        result = subprocess.run(
            [str(setup), str(session_root / "offline")], capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            raise BazelUnavailable(f"{setup} failed: {result.stderr.strip() or result.stdout.strip()}")
        binary = shutil.which("bazel")  # the script may just have installed it
        if binary is None:
            raise BazelUnavailable("bazel is not on PATH (run `make test` as root to install bazel-bootstrap)")
        bazelrc = Path(result.stdout.strip().splitlines()[-1])
        root = session_root / "output_user_root"
        root.mkdir(parents=True, exist_ok=True)
        return cls(Path(binary), bazelrc, root, extra_startup_options=tcnative_startup_options(session_root))

    def workspace(self, template: Path, dest: Path) -> BazelWorkspace:
        """Copy ``template`` to ``dest`` (which must not exist) and register it."""
        shutil.copytree(template, dest, symlinks=True)
        ws = BazelWorkspace(self, dest)
        self.workspaces.append(ws)
        return ws

    def shutdown_all(self) -> None:
        """Stop the Bazel server of every workspace; call this at session end."""
        for ws in self.workspaces:
            ws.shutdown()


@dataclass
class BazelWorkspace:
    """A private copy of a Bazel workspace, with its own output base and server."""

    installation: BazelInstallation
    root: Path

    def startup_options(self) -> list[str]:
        return [
            f"--bazelrc={self.installation.bazelrc}",
            "--nohome_rc",
            f"--output_user_root={self.installation.output_user_root}",
            f"--max_idle_secs={MAX_IDLE_SECS}",
            *self.installation.extra_startup_options,
        ]

    def run(
        self,
        command: str,
        *targets: str,
        flags: Sequence[str] = (),
        check: bool = True,
        expect_exit: int = 0,
        timeout: float = COMMAND_TIMEOUT_S,
    ) -> BazelRun:
        """Run ``bazel <command> [flags] [targets]`` in this workspace."""
        args = [str(self.installation.binary), *self.startup_options(), command]
        if command in BUILD_COMMANDS:
            args += [*ISOLATION_FLAGS, *flags]
        else:
            args += list(flags)
        if targets:
            args += ["--", *targets]
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        proc = subprocess.run(
            args, cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace", timeout=timeout,
        )
        run = BazelRun(args, proc.returncode, proc.stdout)
        if check and run.exit_code != expect_exit:
            raise BazelFailed(
                f"`bazel {command} {' '.join(targets)}` exited {run.exit_code}, expected {expect_exit}\n"
                f"flags: {' '.join(flags)}\n--- last lines of Bazel's output ---\n{run.tail()}"
            )
        return run

    def build(self, *targets: str, flags: Sequence[str] = (), **kwargs: object) -> BazelRun:
        return self.run("build", *targets, flags=flags, **kwargs)  # type: ignore[arg-type]

    def test(self, *targets: str, flags: Sequence[str] = (), **kwargs: object) -> BazelRun:
        return self.run("test", *targets, flags=flags, **kwargs)  # type: ignore[arg-type]

    def clean(self) -> None:
        """Remove every output and Bazel's local action cache; the server stays up."""
        self.run("clean")

    def info(self, key: str) -> Path:
        return Path(self.run("info", key).output.strip().splitlines()[-1])

    def shutdown(self) -> None:
        """Stop this workspace's Bazel server (a no-op when it is not running)."""
        if self.root.exists():
            self.run("shutdown", check=False, timeout=60)

    @property
    def bazel_bin(self) -> Path:
        return self.root / "bazel-bin"

    @property
    def testlogs(self) -> Path:
        return self.root / "bazel-testlogs"

    def outputs(self, *subdirs: str) -> OutputSnapshot:
        """Snapshot bazel-bin (or some of its packages) for byte-for-byte comparison."""
        return snapshot_tree(self.bazel_bin, subdirs)

    def write(self, relpath: str, text: str) -> Path:
        """Add or replace a file in the workspace, e.g. a WORKSPACE with a test server's URL."""
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


def remove_tree(path: Path) -> None:
    """Delete a tree that Bazel made read-only (it chmods outputs to 0555)."""
    if not path.exists():
        return
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            sub = os.path.join(dirpath, name)
            if not os.path.islink(sub):
                os.chmod(sub, 0o755)
    os.chmod(path, 0o755)
    shutil.rmtree(path)
