"""The stores' sizes and evictions, read when Prometheus scrapes, and the age of
evicted values, observed as the engines evict.

``reapi_store_size_bytes`` and ``reapi_store_capacity_bytes`` for every store that
keeps a byte count (memory, disk, packed), ``reapi_store_evictions_total`` for those
that count evictions, and ``reapi_store_evicted_blob_age_seconds``: how long each
evicted value had gone unused (disk: since its last access; packed: the age of its
segment, whose recently used values were copied forward). That is the cache's real
lifetime: builds without the bytes assume a referenced blob lives for hours.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cas.store import BlobStore
from server.metrics.families import ServerMetrics


class StoreGauges(Collector):
    def __init__(self, stores: Mapping[str, BlobStore]) -> None:
        self.stores = dict(stores)

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily("reapi_store_size_bytes", "Bytes held by each store.", labels=["store"])
        capacity = GaugeMetricFamily("reapi_store_capacity_bytes", "Each store's size cap (max_size).",
                                     labels=["store"])
        evictions = CounterMetricFamily("reapi_store_evictions", "Values each store evicted since it opened.",
                                        labels=["store"])
        for name, store in sorted(self.stores.items()):
            total = getattr(store, "total_bytes", None)
            if isinstance(total, int):
                size.add_metric([name], total)
            cap = getattr(store, "max_bytes", None)
            if isinstance(cap, int):
                capacity.add_metric([name], cap)
            evicted = getattr(store, "evicted", None)
            if isinstance(evicted, int):
                evictions.add_metric([name], evicted)
        yield size
        yield capacity
        yield evictions


def watch_stores(metrics: ServerMetrics, stores: Mapping[str, BlobStore]) -> None:
    """Register the gauges and have every evicting engine report the age of what it evicts."""
    metrics.registry.register(StoreGauges(stores))
    for name, store in stores.items():
        watch = getattr(store, "watch_evictions", None)
        if watch is not None:
            ages = metrics.evicted_blob_age.labels(name)

            def observe(idle: list[float], ages: object = ages) -> None:
                for seconds in idle:
                    ages.observe(seconds)  # type: ignore[attr-defined]

            watch(observe)
