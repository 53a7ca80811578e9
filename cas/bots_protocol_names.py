"""The names both ends of the Bots protocol use (docs/BOTS_PROTOCOL.md): worker configs
a bot asks with, and the metadata keys of a call's answer and of the bot's calls.

One definition for the server (server/services/bots.py, bot_summaries.py) and the worker
(worker/daemon.py, leases.py): spelled once, a name cannot drift on one side while the
other still works against itself.
"""

from __future__ import annotations

# Per lease, in lease order, on every answer (section 3).
OPERATION_METADATA_KEY = "executeoperationmetadata-bin"
INSTANCE_NAME_KEY = "reapi-instance-name-bin"
# A bot's call: partial ExecutedActionMetadata of a running lease, per lease id (section 4).
PARTIAL_METADATA_PREFIX = "partial-execution-metadata-"

CAPACITY_CONFIG = "capacity"
HOLD_WHEN_BUSY_CONFIG = "reapi-hold-when-busy"  # hold the bot's call though it runs leases (section 2)

# Section 7, inline inputs: each a worker config (what the bot asks for) and answer
# metadata (what it gets).
INLINE_BLOBS_KEY = "reapi-inline-blobs"
INLINE_FILES_KEY = "reapi-inline-files"  # small input files too, up to this many bytes
FILES_FORM_KEY = "reapi-inline-files-form"  # in which form: FILES_RUN, one run per lease (cas/blob_run.py)
FILES_RUN = "run"
LEASE_BLOBS_KEY = "reapi-lease-blobs-bin"
LEASE_FILES_KEY = "reapi-lease-files-bin"

# Section 8, locality: the summary size offered (a config) and agreed (answer metadata),
# then the summary and the load a bot attaches to its calls.
SUMMARY_CONFIG = "reapi-cache-summary"
SUMMARY_KEY = "reapi-cache-summary-bin"
LOAD_KEY = "reapi-bot-load"
