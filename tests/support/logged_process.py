"""A real child process for end-to-end tests, with its output kept in a log file.

The server and (later) worker processes that Bazel talks to run through this: the
log file outlives the process, so a failing test can show what the process said,
and a readiness line ("listening on HOST:PORT") can be awaited without pipes that
might fill up and block the child.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# Lines that mean the process hit a bug or a storage error, whatever the log format.
PROBLEM = re.compile(r"Traceback \(most recent call last\)|\bERROR\b|\bCRITICAL\b")


class LoggedProcess:
    """Start with ``start()``; stop with ``stop()`` (SIGTERM, then SIGKILL)."""

    def __init__(
        self, name: str, args: Sequence[str], log_path: Path,
        env: Mapping[str, str] | None = None, cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_start = 0  # where this run's lines begin (a restart appends to the same log)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.log_start = log.tell()
            self.popen = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, cwd=self.cwd, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    @property
    def exit_code(self) -> int | None:
        """None while running."""
        return None if self.popen is None else self.popen.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def problems(self) -> list[str]:
        """Log lines that report an error or a traceback."""
        return [line for line in self.log_text().splitlines() if PROBLEM.search(line)]

    def wait_for_log(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Block until the log matches ``pattern``; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            match = pattern.search(self.log_text(), self.log_start)
            if match:
                return match
            code = self.exit_code
            if code is not None:
                raise RuntimeError(f"{self.name} exited with {code} before it was ready:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Terminate the process group gently, then forcibly; return the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait(timeout)
        return self.popen.returncode

    def kill(self, timeout: float = 15.0) -> int:
        """SIGKILL the whole process group at once (no chance to clean up); the exit code."""
        assert self.popen is not None, f"{self.name} was never started"
        self._signal(signal.SIGKILL)
        return self.popen.wait(timeout)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.popen is not None
        try:
            os.killpg(self.popen.pid, sig)  # start_new_session made it a group leader
        except ProcessLookupError:
            pass
