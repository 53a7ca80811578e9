"""A real arm64 ``reapi-worker``: the checkout's worker run by the arm64 rootfs's Python.

    rootfs = prepare_arm_rootfs(REPO_ROOT)
    with arm_worker_process(rootfs, tmp_path / "arm", server.address, bot_id="arm") as worker:
        ...   # a bot session with ISA=arm-a64, detected by the worker itself

On an x86-64 host every instruction of it, and of the actions it runs, goes through
qemu-user. The worker's cache and exec roots are in ``workdir`` (seen inside as
/worker), its log in ``workdir/worker.log`` as for any WorkerProcess. The process
started is bwrap (see tests/support/arm_rootfs.py), which takes the worker down with it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.arm_rootfs import WORKDIR, ArmRootfs
from tests.support.worker_process import WorkerProcess, launch_worker, worker_command

# Python starts 5-10x slower under emulation, more on a busy machine.
STARTUP_TIMEOUT_S = 180.0
# qemu-user refuses clone() with namespace flags (EINVAL), so bubblewrap cannot run
# under emulation: the worker's process fallback, chosen explicitly rather than found
# by a failed probe. (On a real arm64 host the bwrap mode works as anywhere.)
EMULATED_CONFIG = '[worker]\nsandbox = "process"\n'


def start_arm_worker(rootfs: ArmRootfs, workdir: Path, server_address: str, *, bot_id: str,
                     concurrency: int = 2, extra_args: Sequence[str] = ()) -> WorkerProcess:
    """Start the worker inside the rootfs and wait for its bot session (blocking)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "worker.toml").write_text(EMULATED_CONFIG)
    level = os.environ.get("REAPI_LOG_LEVEL", "INFO")
    inside = worker_command(Path(WORKDIR), server_address, bot_id=bot_id, concurrency=concurrency, properties=(),
                            extra_args=["--config", f"{WORKDIR}/worker.toml", *extra_args, "--log-level", level])
    command = rootfs.command([rootfs.python, *inside[1:]], workdir=workdir)
    env = rootfs.environment({"PYTHONUNBUFFERED": "1", "REAPI_LOG_LEVEL": level})
    return launch_worker(command, workdir, bot_id, env, startup_timeout=STARTUP_TIMEOUT_S)


@contextmanager
def arm_worker_process(rootfs: ArmRootfs, workdir: Path, server_address: str, **kw: object) -> Iterator[WorkerProcess]:
    worker = start_arm_worker(rootfs, workdir, server_address, **kw)  # type: ignore[arg-type]
    try:
        yield worker
    finally:
        worker.process.stop()
