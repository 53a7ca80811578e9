"""deploy/container/Containerfile copies what an install needs (no engine runs here to build it)."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO_ROOT

CONTAINERFILE = REPO_ROOT / "deploy" / "container" / "Containerfile"


def test_it_copies_every_package_and_what_pyproject_names() -> None:
    text = CONTAINERFILE.read_text()
    copied = {source for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE) for source in line.split()[:-1]}
    assert all((REPO_ROOT / source).exists() for source in copied), copied
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = {name.rstrip("*") for name in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, packages - copied
    assert {"pyproject.toml", project["project"]["readme"]} <= copied
    assert re.search(r"^FROM python:3\.1[1-9]", text, re.MULTILINE), "the base image must carry the Python we need"
    scripts = set(project["project"]["scripts"])
    assert "reapi-server" in text and scripts == {"reapi-server", "reapi-worker"}
