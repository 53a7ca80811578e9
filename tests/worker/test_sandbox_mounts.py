"""Input subtrees mounted read-only into bwrap sandboxes, with real worker processes: the
action reads them, cannot change them, and writes its outputs and in its working
directory as before; nested inputs stay unchangeable in every sandbox mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from server.app import ReapiServer
from tests.support.servers import channel_to
from tests.worker.actions import ActionClient
from tests.worker.sandboxing import reachable_dir, sandboxed_worker
from tests.worker.trees import Node

OK = grpc.StatusCode.OK.value[0]
MOUNT_ALL = "input_mount_min_entries = 0"  # these trees are small: mount them all the same
LIB = {f"h{i}.h": f"header {i}\n".encode() for i in range(10)}

TRY_TO_CHANGE = """
grep -q ' /tmp/reapi/root/lib ro,' /proc/self/mountinfo && echo mounted-read-only
for attempt in 'echo x > lib/h0.h' 'chmod 666 lib/h0.h' 'rm -f lib/h1.h' 'mv lib/h2.h lib/moved' \
               'touch lib/new' 'mkdir lib/dir' 'ln -s h0.h lib/link'; do
  if sh -c "$attempt" 2>/dev/null; then echo "ALLOWED: $attempt"; fi
done
cat lib/h0.h lib/h1.h lib/h2.h
mkdir -p out && cat lib/*.h > out/all.h && echo scratch > scratch.txt
"""


@pytest.fixture
def reachable() -> Iterator[Path]:
    with reachable_dir() as path:
        yield path


@pytest.mark.parametrize("mode", ["bwrap", "bwrap-setpriv"])
async def test_a_mounted_subtree_is_read_and_never_changed(
    mode: str, exec_server: ReapiServer, tmp_path: Path, reachable: Path
) -> None:
    inputs: dict[str, Node] = {"lib": LIB, "main.c": b"int main;"}
    async with (sandboxed_worker(mode, tmp_path, reachable, exec_server.address, MOUNT_ALL, concurrency=1) as worker,
                channel_to(exec_server) as channel):
        client = ActionClient(channel)
        first = await client.run(["sh", "-c", TRY_TO_CHANGE], inputs, output_files=["out/all.h"], salt=b"1")
        assert first.status.code == OK and first.result.exit_code == 0, first
        stdout = (await client.blob(first.result.stdout_digest)).decode()
        assert "mounted-read-only" in stdout
        assert "ALLOWED" not in stdout
        assert "header 0\nheader 1\nheader 2\n" in stdout
        assert await client.blob(first.result.output_files[0].digest) == b"".join(LIB[f"h{i}.h"] for i in range(10))
        # Another action with the same subtree gets the same, unchanged tree: mounted, not made again.
        later = await client.run(["sh", "-c", "cat lib/h0.h lib/h1.h; ls lib | wc -l"], inputs, salt=b"2")
        assert await client.blob(later.result.stdout_digest) == b"header 0\nheader 1\n10\n"
        trees = [p for p in (worker.workdir / "work" / ".trees").iterdir()]
        assert len(trees) == 1
        assert "mounted read-only" in worker.log_text()
        assert not worker.problems(), worker.problems()


async def test_outputs_and_the_working_directory_keep_their_subtrees_writable(
    exec_server: ReapiServer, tmp_path: Path, reachable: Path
) -> None:
    inputs: dict[str, Node] = {"pkg": {**LIB, "sub": dict(LIB)}, "tools": {"lib": dict(LIB)}}
    script = "cat sub/h3.h > gen.txt && echo temp > temp.txt && rm temp.txt && ls ../tools/lib | wc -l"
    async with (sandboxed_worker("bwrap", tmp_path, reachable, exec_server.address, MOUNT_ALL, concurrency=1),
                channel_to(exec_server) as channel):
        client = ActionClient(channel)
        response = await client.run(["sh", "-c", script], inputs, working_directory="pkg",
                                    output_files=["gen.txt"], salt=b"workdir")
        assert response.status.code == OK and response.result.exit_code == 0, response
        assert await client.blob(response.result.output_files[0].digest) == b"header 3\n"
        assert await client.blob(response.result.stdout_digest) == b"10\n"


NESTED_POISON = ["sh", "-c", "chmod u+w lib/h0.h 2>/dev/null; chmod 666 lib/h0.h 2>/dev/null; "
                             "echo poisoned > lib/h0.h 2>/dev/null; cat lib/h0.h"]


@pytest.mark.parametrize("mode", ["bwrap", "bwrap-setpriv", "process", "process-root"])
async def test_nested_inputs_cannot_be_changed_for_later_actions(
    mode: str, exec_server: ReapiServer, tmp_path: Path, reachable: Path
) -> None:
    async with (sandboxed_worker(mode, tmp_path, reachable, exec_server.address, MOUNT_ALL, concurrency=1),
                channel_to(exec_server) as channel):
        client = ActionClient(channel)
        first = await client.run(NESTED_POISON, {"lib": LIB}, salt=b"poison")
        assert first.status.code == OK, first.status
        later = await client.run(["cat", "lib/h0.h"], {"lib": LIB}, salt=b"read")
        assert await client.blob(later.result.stdout_digest) == b"header 0\n"
        if mode == "process-root":  # root got copies: it changed its own copy
            assert await client.blob(first.result.stdout_digest) == b"poisoned\n"
        else:
            assert await client.blob(first.result.stdout_digest) == b"header 0\n"
