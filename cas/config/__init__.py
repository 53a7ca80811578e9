"""Configuration: each store type and each section described once, read by one reader.

- ``values.py``: sizes ("20GiB"), durations ("10m"), ``${VAR}`` expansion, paths;
  ``ConfigError``, whose message is one line naming the file, section and key.
- ``reader.py``: ``read_table(Dataclass, table, "[section]")``, the one typed reader
  (unknown keys are errors, with the closest known key suggested).
- ``stores.py``: one frozen spec dataclass per store type (``[stores.NAME]`` tables,
  named children), ``build_order`` (children first, cycles reported).
- ``factory.py``: ``build_stores``, the one ``match`` from specs to stores.
- ``file.py``: the file's sections, shared by reapi-server and reapi-worker.

Composite stores name their children (NativeLink's model), so two parents can share
a child::

    [stores.disk]
    type = "disk"
    path = "~/.cache/reapi/cas"
    max_size = "20GiB"

    [stores.cas]
    type = "verify"
    inner = "disk"
"""

from cas.config.factory import build_store, build_stores, close_stores
from cas.config.file import FILE_SECTIONS, check_sections, errors_in, read_toml
from cas.config.reader import (
    ONE_OR_MORE, Above, AtLeast, AtMost, Duration, Noun, Size, StoreName, check_known, read_table,
)
from cas.config.stores import STORE_SPECS, STORE_TYPES, StoreSpec, build_order, read_store_spec, read_store_specs
from cas.config.values import ConfigError, cache_home, expand_env, expand_path, parse_duration, parse_size

__all__ = [
    "ONE_OR_MORE", "Above", "AtLeast", "AtMost", "ConfigError", "Duration", "FILE_SECTIONS", "Noun",
    "STORE_SPECS", "STORE_TYPES", "Size", "StoreName", "StoreSpec", "build_order", "build_store",
    "build_stores", "cache_home", "check_known", "check_sections", "close_stores", "errors_in",
    "expand_env", "expand_path", "parse_duration", "parse_size", "read_store_spec", "read_store_specs",
    "read_table", "read_toml",
]
