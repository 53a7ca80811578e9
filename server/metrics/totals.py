"""Running totals read from the metrics: what the periodic log line and the
dashboard's last minutes subtract from each other."""

from __future__ import annotations

from dataclasses import dataclass

from server.metrics.families import ServerMetrics

# Codes that are answers, not failures: a cache miss, a client that hung up (bots end
# their held call when a lease finishes).
ANSWERS = frozenset({"OK", "NOT_FOUND", "CANCELLED"})


@dataclass(frozen=True)
class Totals:
    requests: float = 0.0
    errors: float = 0.0
    hits: float = 0.0
    misses: float = 0.0
    executions: float = 0.0

    @classmethod
    def read(cls, metrics: ServerMetrics) -> Totals:
        requests = errors = 0.0
        for family in metrics.rpc_duration.collect():
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    requests += sample.value
                    if sample.labels.get("code") not in ANSWERS:
                        errors += sample.value
        executions = sum(s.value for f in metrics.executions.collect() for s in f.samples
                         if s.name.endswith("_total"))
        lookups = metrics.registry.get_sample_value
        hits = lookups("reapi_action_cache_lookups_total", {"result": "hit"}) or 0.0
        misses = lookups("reapi_action_cache_lookups_total", {"result": "miss"}) or 0.0
        return cls(requests, errors, hits, misses, executions)

    def __sub__(self, other: Totals) -> Totals:
        return Totals(self.requests - other.requests, self.errors - other.errors, self.hits - other.hits,
                      self.misses - other.misses, self.executions - other.executions)
