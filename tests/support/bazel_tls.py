"""TLS for Debian's Bazel 4.2.3 (bazel-bootstrap): netty-tcnative's OpenSSL, made loadable.

Debian builds Bazel against its own netty, from which the JDK ALPN negotiator is
removed, so ``--remote_executor=grpcs://...`` crashes the Bazel server with "JDK
provider does not support ALPN protocol" unless netty can use OpenSSL through
netty-tcnative. Debian ships that library (libnetty-tcnative-jni) as
``libnetty-tcnative.so``, a name netty does not look for, and the library checks its
own file name when loaded, so a symlink does not do: a copy named
``libnetty_tcnative.so`` in a directory on the JVM's ``java.library.path`` does.
Upstream Bazel releases bundle netty-tcnative and need none of this.
"""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

DEBIAN_LIBRARY = "/usr/lib/*/jni/libnetty-tcnative.so"
NETTY_NAME = "libnetty_tcnative.so"


def tcnative_startup_options(session_root: Path) -> list[str]:
    """Bazel startup options that let its netty load OpenSSL; [] if the library is not installed."""
    found = sorted(glob.glob(DEBIAN_LIBRARY))
    if not found:
        return []
    directory = session_root / "jni"
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / NETTY_NAME
    if not target.exists():
        shutil.copyfile(found[0], target)
    return [f"--host_jvm_args=-Djava.library.path={directory}"]
