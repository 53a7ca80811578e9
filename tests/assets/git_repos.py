"""Git repositories made by the tests, ready for git's dumb HTTP protocol."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT = {"resource_type": "application/x-git"}
ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout.strip()


class Repo:
    """A work tree with two commits, and a bare copy ready for dumb HTTP."""

    def __init__(self, root: Path) -> None:
        work = root / "work"
        work.mkdir()
        git(work, "init", "-q", "-b", "main")
        (work / "a.txt").write_text("first\n")
        (work / "bin").mkdir()
        (work / "bin" / "run.sh").write_text("#!/bin/sh\necho run\n")
        (work / "bin" / "run.sh").chmod(0o755)
        (work / "link").symlink_to("a.txt")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "one")
        self.first = git(work, "rev-parse", "HEAD")
        (work / "a.txt").write_text("second\n")
        (work / "sub").mkdir()
        (work / "sub" / "b.txt").write_text("b\n")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "two")
        self.second = git(work, "rev-parse", "HEAD")
        self.bare = root / "served" / "repo.git"
        git(root, "clone", "-q", "--bare", str(work), str(self.bare))
        git(self.bare, "update-server-info")


def bare_repo(root: Path, files: dict[str, bytes]) -> Path:
    """A bare repository (dumb-HTTP ready) whose one commit holds ``files``; its path."""
    work = root / "work"
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    for name, content in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(content)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "files")
    bare = root / "served" / "repo.git"
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    git(bare, "update-server-info")
    return bare
