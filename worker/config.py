"""Worker configuration: a ``[worker]`` table in a TOML file, then command-line overrides.

    [worker]
    server = "grpc://127.0.0.1:8980"
    instance_name = ""
    concurrency = 8                      # default: CPU count
    cache_dir = "~/.cache/reapi/worker/cache"
    cache_max_size = "10GiB"
    work_dir = "~/.cache/reapi/worker/work"   # keep on the cache's filesystem (hardlinks)
    default_path = "/usr/local/bin:/usr/bin:/bin"
    sandbox = "auto"                     # bwrap where it runs, else the process fallback
    memory_limit = "8GiB"                # per action; see docs/WORKER.md "Sealed actions"
    tls_ca = "/etc/reapi/tls/ca.crt"     # with server = "grpcs://..."; see docs/SECURITY.md
    token_file = "/etc/reapi/worker.token"

    [worker.properties]                  # add to or replace detected platform properties
    ISA = ["arm-a64"]
    pool = "big"

Every key is documented in docs/CONFIG.md (section "Worker").
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from cas.config import (
    ONE_OR_MORE, Above, AtLeast, ConfigError, Duration, Size, cache_home, check_sections, errors_in, read_table,
    read_toml,
)
from cas.security.channels import target_of
from worker.platform import host_cpu_count
from worker.sandbox.sandbox import NetworkPolicy, SandboxMode

DEFAULT_SERVER = "grpc://127.0.0.1:8980"
SYSTEM_WORKER_HOME = Path("/var/cache/reapi/worker")


def worker_home() -> Path:
    """Where the cache and exec roots go by default: the user's cache directory, but
    for root (a system service, whose home the action user cannot enter; see
    docs/WORKER.md "Sealed actions") /var/cache/reapi/worker, unless XDG_CACHE_HOME is set."""
    if os.geteuid() == 0 and not os.environ.get("XDG_CACHE_HOME"):
        return SYSTEM_WORKER_HOME
    return cache_home() / "worker"

Seconds = Annotated[Duration, Above(0)]


class Compression(enum.Enum):
    """Whether blobs move compressed between the worker and the server."""

    AUTO = "auto"  # zstd if the server offers it, unless the server is on this host
    ZSTD = "zstd"  # zstd whenever the server offers it
    OFF = "off"


@dataclass(frozen=True)
class WorkerConfig:
    """``[worker]``; docs/CONFIG.md ("Worker") explains each key for operators."""

    server: str = DEFAULT_SERVER
    """The server: ``grpc://HOST:PORT`` or ``grpcs://HOST:PORT``."""
    instance_name: str = ""
    """The instance whose scheduler this worker serves."""
    concurrency: Annotated[int, AtLeast(1)] = field(default_factory=host_cpu_count)
    """Actions run at once (the capacity reported); default the CPU count."""
    cache_dir: Path = field(default_factory=lambda: worker_home() / "cache")
    """The local CAS cache, shared by all leases and kept across restarts."""
    cache_max_size: Size = 10 << 30
    """The cache's size cap."""
    work_dir: Path = field(default_factory=lambda: worker_home() / "work")
    """Where exec roots are made; keep it on the cache's filesystem (hardlinks)."""
    properties: dict[str, Annotated[list[str], ONE_OR_MORE]] = field(default_factory=dict)
    """``[worker.properties]``: platform properties added to or replacing the detected ones."""
    default_path: str = "/usr/local/bin:/usr/bin:/bin"
    """PATH for commands whose environment has none."""
    default_timeout: Seconds | None = None
    """How long an action may run when its Action sets no timeout; None: no limit."""
    max_timeout: Seconds | None = None
    """The upper bound on any action's timeout; None: no bound."""
    kill_grace: Seconds = 2.0
    """Between SIGTERM and SIGKILL when an action times out."""
    live_log_interval: Seconds = 0.1
    """How often new stdout/stderr is sent to the action's LogStreams."""
    drain_timeout: Seconds = 60.0
    """On SIGTERM: how long running actions may finish before they are handed back."""
    bot_id: str = ""
    """The worker's id in the fleet; default HOST.PID."""
    call_timeout: Seconds = 60.0
    """The deadline of each UpdateBotSession call."""
    inline_blob_limit: Size = 1 << 20
    """Bytes of blobs a lease answer and a completion report may carry inline (docs/BOTS_PROTOCOL.md
    section 7), if the server agrees; 0 = never (every input is read, every output uploaded)."""
    inline_file_limit: Size = 512 << 10
    """Of ``inline_blob_limit``, bytes of an action's small input files a lease answer may carry
    (docs/BOTS_PROTOCOL.md section 7, "Input files"), if the server agrees; 0 = none (read from the CAS)."""
    compression: Compression = Compression.AUTO
    """zstd for large compressible blobs to and from the server when it offers zstd ("auto": not over loopback)."""
    compression_min_size: Size = 128 << 10
    """Blobs smaller than this always move as they are."""
    busy_call_delay: Duration = 0.5
    """With every slot busy: how long before a call is held open only to hear of cancellations."""
    cache_summary_size: Size = 8 << 10
    """Bytes of cache summary (a Bloom filter of the newest cache files) offered to the server for
    locality dispatch (docs/BOTS_PROTOCOL.md section 8); 0 = none."""
    http_listen: str = ""
    """The HTTP address of the worker's ``/metrics``; ``""`` serves none (``--http-listen``)."""
    sandbox: SandboxMode = SandboxMode.AUTO
    """"auto": bwrap where it runs, else the process fallback; "bwrap": bwrap or refuse to start;
    "process": the process fallback (docs/WORKER.md, "Sealed actions")."""
    run_as: str = ""
    """The user actions run as when the worker runs as root; "": reapi-action, else nobody."""
    network: NetworkPolicy = NetworkPolicy.ON_REQUEST
    """"off", "on_request" (actions with the platform property network=on get the network), "on" (all do)."""
    bwrap: str = "bwrap"
    """The bubblewrap program (a name looked up in PATH, or a path)."""
    cgroups: bool = True
    """Use cgroups where the worker may create them (limits, and a sure kill in the process fallback)."""
    memory_limit: Size | None = None
    """Memory each action may use; None: no limit."""
    max_processes: Annotated[int, AtLeast(1)] | None = None
    """Processes each action may run at once; None: no limit."""
    max_stdio_size: Size | None = 1 << 30
    """Bytes each of an action's stdout and stderr may reach; None: no limit."""
    max_output_size: Size | None = None
    """Bytes an action's outputs may take together (and any one file it writes); None: no limit."""
    tls_ca: Path | None = None
    """CA certificates (PEM) that sign the server's certificate; default the system's (grpcs:// only)."""
    tls_cert: Path | None = None
    """Client certificate (PEM), for servers that require one (mTLS)."""
    tls_key: Path | None = None
    """The client certificate's private key (PEM)."""
    token_file: Path | None = None
    """A file holding the bearer token sent on every call; re-read when it changes."""
    input_mounts: bool = True
    """With bwrap: input subtrees the action does not write into (no output, not its working directory)
    are made once per Directory digest and mounted read-only, instead of a link per file."""
    input_tree_entries: Annotated[int, AtLeast(0)] = 500_000
    """How many entries (files, symlinks, directories) those made subtrees may hold in all."""
    input_mount_min_entries: Annotated[int, AtLeast(0)] = 256
    """Subtrees are mounted only when they hold this many entries in all (else linked in the sandbox made ready)."""

    def __post_init__(self) -> None:
        _, secure = target_of(self.server)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if not secure and any(p is not None for p in (self.tls_ca, self.tls_cert, self.tls_key)):
            raise ValueError(f"tls_ca, tls_cert and tls_key need a grpcs:// server, not {self.server!r}")


def parse_worker_table(table: dict[str, Any]) -> WorkerConfig:
    return read_table(WorkerConfig, table, "[worker]")


def load_worker_config(path: Path | None) -> WorkerConfig:
    """The ``[worker]`` table of a TOML file, or the defaults. The file may hold the
    server's sections too (the server checks those); an unknown section is an error."""
    if path is None:
        return WorkerConfig()
    with errors_in(path):
        data = read_toml(path)
        check_sections(data)
        return parse_worker_table(data.get("worker", {}))
