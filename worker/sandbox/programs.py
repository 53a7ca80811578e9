"""Is the program an action names there, as the sandbox will see it?

bwrap reports a missing program only as its own exit status 1, so the worker looks
first, the way ``execvp`` will inside (the Command's PATH for a bare name, the
working directory for a relative one), through the sandbox's path mapping; a missing
program stays INVALID_ARGUMENT, as without a sandbox.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Callable
from pathlib import Path


def _check(host: str) -> int:
    """0 when ``host`` is an executable file, else the errno exec would give."""
    try:
        mode = os.stat(host).st_mode
    except FileNotFoundError:
        return errno.ENOENT
    except NotADirectoryError:
        return errno.ENOTDIR
    except OSError as exc:
        return exc.errno or errno.EACCES
    if not stat.S_ISREG(mode) or not mode & 0o111:
        return errno.EACCES
    return 0


def find_program(argv0: str, path: str, cwd: Path, host_path: Callable[[str], str],
                 inside: Callable[[Path], str]) -> OSError | None:
    """None when ``argv0`` can be executed in the sandbox, else the error exec would raise."""
    workdir = inside(cwd)
    if "/" in argv0:
        candidates = [argv0 if argv0.startswith("/") else posixpath.join(workdir, argv0)]
    else:
        candidates = [posixpath.join(d if d.startswith("/") else posixpath.join(workdir, d), argv0)
                      for d in (path.split(":") if path else os.defpath.split(":"))]
    first_error = errno.ENOENT
    for candidate in candidates:
        code = _check(host_path(posixpath.normpath(candidate)))
        if code == 0:
            return None
        if code != errno.ENOENT and first_error == errno.ENOENT:
            first_error = code
    return OSError(first_error, os.strerror(first_error))
