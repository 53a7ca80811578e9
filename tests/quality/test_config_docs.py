"""docs/CONFIG.md documents every key the config reader accepts: each section and each
store type is one dataclass, so its fields are the list to check against."""

from __future__ import annotations

import dataclasses
import re

import pytest

from cas.config import FILE_SECTIONS, STORE_SPECS
from server.assets.config import AssetsSection
from server.auth.config import AnonymousConfig, AuthConfig, CertificateRule, JwtConfig, TlsConfig
from server.config import InstanceConfig, ServerSection
from server.local_worker import LocalWorkerConfig
from server.scheduler.config import ExecutionConfig
from tests.conftest import REPO_ROOT
from worker.config import WorkerConfig

DOC = (REPO_ROOT / "docs" / "CONFIG.md").read_text()


def doc_part(heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = DOC.index(heading + "\n")
    ends = [m.start() for m in re.finditer(rf"^#{{2,{len(level)}}} ", DOC[start + len(heading):], re.MULTILINE)]
    return DOC[start:start + len(heading) + ends[0]] if ends else DOC[start:]


def table_keys(text: str) -> set[str]:
    """Every `key` named in the first cell of a table row (``| `a`, `b` | ...`` gives a and b)."""
    keys = set()
    for row in re.findall(r"^\| ([^|]+) \|", text, re.MULTILINE):
        keys |= {name.split()[-1] for name in re.findall(r"`([^`]+)`", row)}
    return keys


SECTIONS = [
    ("## Server and instances", ServerSection, ""),
    ("## Server and instances", InstanceConfig, ""),
    ("## Execution", ExecutionConfig, "platform"),  # [execution.platform] has a section of its own
    ("### `[server.tls]`", TlsConfig, ""),
    ("### `[server.auth]`", AuthConfig, ""),
    ("### `[server.auth]`", AnonymousConfig, ""),
    ("### `[server.auth.jwt]`", JwtConfig, ""),
    ("### `[[server.auth.certificates]]`", CertificateRule, ""),
    ("## Remote Asset API", AssetsSection, ""),
    ("## Local worker", LocalWorkerConfig, ""),
    ("## Worker", WorkerConfig, ""),
] + [(f'### `type = "{kind}"`', spec, "") for kind, spec in STORE_SPECS.items()]


@pytest.mark.parametrize(("heading", "cls", "elsewhere"), SECTIONS, ids=lambda v: getattr(v, "__name__", None))
def test_every_key_is_documented(heading: str, cls: type, elsewhere: str) -> None:
    keys = {field.name for field in dataclasses.fields(cls)} - {elsewhere}
    assert keys <= table_keys(doc_part(heading)), f"{heading}: keys missing from docs/CONFIG.md"


def test_every_section_is_documented() -> None:
    for written in FILE_SECTIONS.values():
        assert written in DOC, written
    assert "### `[execution.platform]`" in DOC


@pytest.mark.parametrize("kind", list(STORE_SPECS))
def test_store_tables_document_no_key_that_does_not_exist(kind: str) -> None:
    keys = {field.name for field in dataclasses.fields(STORE_SPECS[kind])}
    assert table_keys(doc_part(f'### `type = "{kind}"`')) == keys
