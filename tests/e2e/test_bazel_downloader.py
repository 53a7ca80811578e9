"""Issue 5, acceptance 2: real Bazel downloads external repositories through reapi.

Bazel 4.2.3 builds a workspace whose http_archive and http_file point at an HTTP
origin started by the test, with ``--experimental_remote_downloader`` aimed at a
real ``reapi-server`` process: every download is a FetchBlob, which the server
performs (the origin sees only the server's User-Agent), and Bazel reads the blob
from the CAS. Then the origin is stopped, Bazel's repository cache is deleted and
its output base expunged, and the build still succeeds: the server answers from its
asset index and CAS.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

from server.assets.http import USER_AGENT
from tests.support.bazel import BazelInstallation, remote_cache_flags, remote_downloader_flags
from tests.support.http_origin import HttpOrigin
from tests.support.server_process import reapi_server_process, server_config

WORKSPACE_TEMPLATE = Path(__file__).resolve().parent / "downloader_workspace"
GREETING = b"hello from an http_archive\n"
DATA = b"and from an http_file\n"


def greeting_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("greeting-1.0/greeting.txt")
        info.size = len(GREETING)
        archive.addfile(info, io.BytesIO(GREETING))
    return buffer.getvalue()


def test_bazel_fetches_through_the_remote_downloader_and_then_from_the_cache(
    bazel: BazelInstallation, tmp_path: Path
) -> None:
    archive = greeting_archive()
    origin = HttpOrigin().start()
    try:
        origin.serve("/greeting-1.0.tar.gz", archive)
        origin.serve("/data.txt", DATA)
        ws = bazel.workspace(WORKSPACE_TEMPLATE, tmp_path / "ws")
        ws.write(
            "WORKSPACE",
            (WORKSPACE_TEMPLATE / "WORKSPACE.in")
            .read_text()
            .replace("@ORIGIN@", origin.url(""))
            .replace("@ARCHIVE_SHA256@", hashlib.sha256(archive).hexdigest())
            .replace("@DATA_SHA256@", hashlib.sha256(DATA).hexdigest()),
        )
        repository_cache = tmp_path / "repository_cache"
        # The origin listens on 127.0.0.1, which the server fetches from only when told it may.
        config = server_config(tmp_path / "server", assets={"allow_private_networks": True})
        with reapi_server_process(tmp_path / "server", config) as server:
            flags = [
                *remote_cache_flags(server.url),
                *remote_downloader_flags(server.url),
                f"--repository_cache={repository_cache}",  # after the harness's "off", so it wins
            ]
            ws.build("//:combined", flags=flags)
            assert (ws.bazel_bin / "combined.txt").read_bytes() == GREETING + DATA
            fetched = origin.requests_for("/greeting-1.0.tar.gz") + origin.requests_for("/data.txt")
            assert len(fetched) == 2, [r.path for r in origin.requests]
            assert {r.headers.get("User-Agent") for r in fetched} == {USER_AGENT}, "Bazel must not download by itself"

            origin.stop()
            shutil.rmtree(repository_cache)
            ws.run("clean", flags=["--expunge"])
            ws.build("//:combined", flags=flags)
            assert (ws.bazel_bin / "combined.txt").read_bytes() == GREETING + DATA
            assert server.problems() == [], server.log_tail()
    finally:
        origin.stop()
