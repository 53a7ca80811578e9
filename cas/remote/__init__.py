"""Another REAPI endpoint's CAS as a BlobStore (``store.py``), used by the ``grpc``
store type and the worker, and how its BatchReadBlobs are grouped and read
(``batch_reads.py``)."""
