"""Bazel's execution log (``--execution_log_json_file``): one record per spawn.

Used where a test demands that a rebuild take every action from the remote cache.
One kind of action may honestly miss: with split test.xml generation (Bazel's
default) the ``generate-xml.sh`` spawn gets the test's duration in whole seconds
as an argument, and a rerun whose test came from the cache reports 0 s; a first run
that took a second or more (a loaded machine) gives that spawn a new key. Every
other spawn must hit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

XML_GENERATION_SCRIPT = "generate-xml.sh"


@dataclass(frozen=True)
class Spawn:
    mnemonic: str
    args: tuple[str, ...]
    remote_cache_hit: bool
    runner: str

    @property
    def is_test_xml_generation(self) -> bool:
        return bool(self.args) and self.args[0].endswith(XML_GENERATION_SCRIPT)

    def __str__(self) -> str:
        return f"{self.mnemonic} ({self.runner}): {' '.join(self.args)[:200]}"


def read_execution_log(path: Path) -> list[Spawn]:
    """Parse the file: Bazel 4 writes JSON objects one after another, not an array."""
    text = path.read_text()
    decoder = json.JSONDecoder()
    spawns: list[Spawn] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return spawns
        record, position = decoder.raw_decode(text, position)
        spawns.append(Spawn(
            mnemonic=record.get("mnemonic", ""),
            args=tuple(record.get("commandArgs", ())),
            remote_cache_hit=bool(record.get("remoteCacheHit", False)),
            runner=record.get("runner", ""),
        ))


def cache_misses(spawns: list[Spawn]) -> tuple[list[Spawn], list[Spawn]]:
    """(misses that mean a broken cache, test.xml spawns that missed for their duration)."""
    misses = [s for s in spawns if not s.remote_cache_hit]
    return [s for s in misses if not s.is_test_xml_generation], [s for s in misses if s.is_test_xml_generation]
