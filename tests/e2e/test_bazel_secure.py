"""Issue 9, acceptance 1-3 with the real Bazel 4.2.3 client against a secured farm.

1. Bazel runs the sample workspace remotely (``--remote_executor=grpcs://localhost:PORT``)
   with ``--tls_certificate`` (the CA) and a token in ``--remote_header``; the server's
   own worker runs every action with a credential the server gave it. Again with a
   client certificate (``--tls_client_certificate/--tls_client_key``) and mTLS required.
2. A developers' token without ``ac-write`` builds with ``--remote_upload_local_results``:
   the build succeeds, its result uploads are refused (PERMISSION_DENIED, as Bazel's
   warnings show), so CI's rebuild after ``bazel clean`` finds nothing from it; once
   CI has built, the developers' token reads CI's results.
3. Bazel with no token, or an unknown one, is refused with UNAUTHENTICATED naming why.

Certificates (for ``localhost``) and tokens are made by the test.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.e2e.conftest import SAMPLE_TESTS, LocalBuild
from tests.support.bazel import BazelRun, BazelWorkspace, remote_cache_flags, remote_execution_flags
from tests.support.bazel_execlog import cache_misses, read_execution_log
from tests.support.bazel_summary import REMOTE, REMOTE_CACHE_HIT
from tests.support.certificates import Pair, TestPki
from tests.support.server_process import ServerProcess, reapi_server_process, server_config
from tests.support.tokens import TokenFile

CI = ["read", "write", "ac-write", "execute"]
DEVELOPERS = ["read", "write", "execute"]


def secure_config(workdir: Path, pki: TestPki, tokens: TokenFile, *, mtls: bool = False,
                  execution: bool = True) -> dict[str, Any]:
    pair = pki.server_certificate()
    tls = {"cert": str(pair.cert), "key": str(pair.key)}
    if mtls:
        tls["client_ca"] = str(pki.ca_cert)
    sections: dict[str, Any] = {"local_worker": {"enabled": True, "concurrency": 2}} if execution else {
        "execution": {"enabled": False}}
    return server_config(workdir, server={"tls": tls, "auth": {"tokens": str(tokens.path)}}, **sections)


def url_of(server: ServerProcess) -> str:
    return f"grpcs://localhost:{server.address.rsplit(':', 1)[1]}"


def secure_flags(pki: TestPki, token: str | None, client: Pair | None = None) -> list[str]:
    flags = [f"--tls_certificate={pki.ca_cert}"]
    if token is not None:
        flags.append(f"--remote_header=authorization=Bearer {token}")
    if client is not None:
        flags += [f"--tls_client_certificate={client.cert}", f"--tls_client_key={client.key}"]
    return flags


def remote_warnings(run: BazelRun) -> list[str]:
    return [w for w in run.warnings() if "remote" in w.lower()]


def check_remote_run(ws: BazelWorkspace, local_build: LocalBuild, server: ServerProcess, flags: list[str]) -> None:
    """Every action of the sample workspace runs on the farm's worker, every test passes."""
    ws.clean()
    run = ws.test("//...", flags=flags)
    summary = run.summary
    assert summary.actions == local_build.run.summary.actions, (summary, local_build.run.summary)
    assert summary.count(REMOTE) == summary.actions, f"not every action ran remotely: {summary}\n{server.log_tail()}"
    for target in SAMPLE_TESTS:
        assert re.search(rf"^{re.escape(target)}\s+PASSED", run.output, re.MULTILINE), run.tail()
    assert not remote_warnings(run), remote_warnings(run)
    log = server.process.log_text()
    assert "authentication on: tokens" in log and "local worker started" in log
    assert re.search(r"bot session \S+ created", log), "the local worker never got a session"
    assert "refused a call" not in log, "a call by Bazel or the local worker was refused:\n" + server.log_tail()
    assert not server.problems(), server.problems()


def test_bazel_executes_remotely_over_tls_with_a_token(
    sample_workspace: BazelWorkspace, local_build: LocalBuild, tmp_path: Path
) -> None:
    pki = TestPki(tmp_path / "pki")
    tokens = TokenFile(tmp_path / "tokens.toml")
    ci = tokens.add("ci", CI)
    workdir = tmp_path / "server"
    with reapi_server_process(workdir, secure_config(workdir, pki, tokens)) as server:
        base = remote_execution_flags(url_of(server))
        check_remote_run(sample_workspace, local_build, server, [*base, *secure_flags(pki, ci)])

        # Acceptance 3 as Bazel sees it: no token, an unknown token.
        for token, reason in ((None, "no credentials"), ("not-a-real-token", "unknown token")):
            sample_workspace.clean()
            refused = sample_workspace.build("//gen:all", flags=[*base, *secure_flags(pki, token)], check=False)
            assert refused.exit_code != 0, refused.tail()
            assert "UNAUTHENTICATED" in refused.output and reason in refused.output, refused.tail()
            assert "not-a-real-token" not in server.process.log_text()


def test_bazel_executes_remotely_with_a_client_certificate_under_required_mtls(
    sample_workspace: BazelWorkspace, local_build: LocalBuild, tmp_path: Path
) -> None:
    pki = TestPki(tmp_path / "pki")
    tokens = TokenFile(tmp_path / "tokens.toml")
    ci = tokens.add("ci", CI)
    workdir = tmp_path / "server"
    with reapi_server_process(workdir, secure_config(workdir, pki, tokens, mtls=True)) as server:
        base = remote_execution_flags(url_of(server))
        client = pki.client_certificate("ci-runner")
        check_remote_run(sample_workspace, local_build, server, [*base, *secure_flags(pki, ci, client)])

        # The same token without the certificate does not get through the handshake: Bazel
        # sees the connection closed; the server's log names the cause.
        sample_workspace.clean()
        refused = sample_workspace.build("//gen:all", flags=[*base, *secure_flags(pki, ci)], check=False)
        assert refused.exit_code != 0, refused.tail()
        assert "Failed to query remote execution capabilities" in refused.output, refused.tail()
        assert re.search(r"Handshake failed.*PEER_DID_NOT_RETURN_A_CERTIFICATE", server.process.log_text())


def test_developers_without_ac_write_cannot_fill_the_cache_but_read_what_ci_wrote(
    sample_workspace: BazelWorkspace, local_build: LocalBuild, tmp_path: Path
) -> None:
    ws = sample_workspace
    pki = TestPki(tmp_path / "pki")
    tokens = TokenFile(tmp_path / "tokens.toml")
    ci, developers = tokens.add("ci", CI), tokens.add("developers", DEVELOPERS)
    workdir = tmp_path / "server"
    with reapi_server_process(workdir, secure_config(workdir, pki, tokens, execution=False)) as server:
        cache = [*remote_cache_flags(url_of(server)), "--remote_upload_local_results"]

        ws.clean()
        developer_build = ws.test("//...", flags=[*cache, *secure_flags(pki, developers)])
        refusals = [w for w in developer_build.warnings() if "PERMISSION_DENIED" in w]
        assert refusals, f"no upload was refused:\n{developer_build.tail()}"
        assert any("identity 'developers' (token) lacks the ac-write permission" in w for w in refusals), refusals
        assert developer_build.summary.count(REMOTE_CACHE_HIT) == 0

        ws.clean()
        ci_build = ws.test("//...", flags=[*cache, *secure_flags(pki, ci)])
        assert ci_build.summary.count(REMOTE_CACHE_HIT) == 0, f"the developers' results got in: {ci_build.summary}"
        assert not remote_warnings(ci_build), remote_warnings(ci_build)

        ws.clean()
        execution_log = tmp_path / "developer-rebuild.json"
        reread = ws.test("//...", flags=[*cache, *secure_flags(pki, developers),
                                          f"--execution_log_json_file={execution_log}"])
        spawns = read_execution_log(execution_log)
        broken, xml_duration_misses = cache_misses(spawns)
        assert not broken, "the developers' token missed CI's results:\n" + "\n".join(map(str, broken))
        assert reread.summary.count(REMOTE_CACHE_HIT) == ci_build.summary.actions - len(xml_duration_misses)
        assert not local_build.outputs.diff(ws.outputs()), "\n".join(local_build.outputs.diff(ws.outputs()))
        assert not server.problems(), server.problems()

