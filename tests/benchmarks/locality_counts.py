"""What a build cost the control plane, counted (``bench_locality --counts``): the
calls the server served per gRPC method (its /metrics), and, with the Redis state,
the commands redis-server ran and the scripts among them by name (``INFO
commandstats`` and a ``SLOWLOG`` that logs every command). Counting, not sampling:
a profile of a build spread locality's extra CPU over many places, and a count says
which calls there are more of. The bench only; nothing on the server's path.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import redis

from server.scheduler.locality import FIFO, LOCALITY
from tests.benchmarks.bench_execution import cpu_seconds
from server.scheduler.state.redis.scripts import _lua, dispatch_header
from server.scheduler.state.redis.script_text import script_text
from tests.support.metrics_scrape import scrape

SLOWLOG_ENTRIES = 2_000_000  # more than a build's commands (about 20,000)


def script_names() -> dict[str, str]:
    """The SHA1 of every script, as either dispatch sends it (scripts.py), -> its name."""
    from importlib import resources
    folder = resources.files("server.scheduler.state.redis").joinpath("lua")
    names = sorted(p.name.removesuffix(".lua") for p in folder.iterdir() if p.name.endswith(".lua"))
    out = {}
    for dispatch in (FIFO, LOCALITY):
        prelude = _lua("prelude") + ("\n" + _lua("locality") if dispatch.locality else "") + "\n"
        for name in names:
            if name in ("prelude", "locality"):
                continue
            text = dispatch_header(dispatch) + script_text(prelude, _lua(name))
            out[hashlib.sha1(text.encode()).hexdigest()] = name
    return out


@dataclass
class Counts:
    """One build's counts."""

    rpcs: Counter[str] = field(default_factory=Counter)  # gRPC method -> calls served
    commands: Counter[str] = field(default_factory=Counter)  # Redis command -> calls
    command_us: Counter[str] = field(default_factory=Counter)  # Redis command -> microseconds in it
    scripts: Counter[str] = field(default_factory=Counter)  # script name -> calls
    script_us: Counter[str] = field(default_factory=Counter)  # script name -> microseconds in it
    cpu: Counter[str] = field(default_factory=Counter)  # "reapi-server", "redis-server" -> CPU seconds


def _rpc_counts(metrics_url: str) -> Counter[str]:
    page = scrape(metrics_url)
    out: Counter[str] = Counter()
    for (name, labels), value in page.samples.items():
        if name == "reapi_rpc_duration_seconds_count":
            out[dict(labels)["method"].rsplit("/", 1)[-1]] += int(value)
    return out


class BuildCounter:
    """Counts what the server and redis-server did between ``start`` and ``stop``."""

    def __init__(self, metrics_url: str, redis_url: str | None, pids: dict[str, int]) -> None:
        """``pids``: the processes whose CPU seconds to count, by name."""
        self.metrics_url = metrics_url
        self.pids = pids
        self._cpu: dict[str, float] = {}
        self.client = redis.Redis.from_url(redis_url) if redis_url else None
        self._rpcs: Counter[str] = Counter()

    def start(self) -> None:
        self._rpcs = _rpc_counts(self.metrics_url)
        if self.client is not None:
            self.client.config_set("slowlog-max-len", SLOWLOG_ENTRIES)
            self.client.config_set("slowlog-log-slower-than", 0)
            self.client.slowlog_reset()
            self.client.config_resetstat()
        self._cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> Counts:
        counts = Counts()
        counts.cpu.update({name: cpu_seconds(pid) - self._cpu[name] for name, pid in self.pids.items()})
        counts.rpcs = _rpc_counts(self.metrics_url) - self._rpcs
        if self.client is None:
            return counts
        self.client.config_set("slowlog-log-slower-than", -1)
        for name, stats in self.client.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            counts.commands[command] = int(stats["calls"])
            counts.command_us[command] = int(stats["usec"])
        names = script_names()
        for entry in self.client.slowlog_get(SLOWLOG_ENTRIES):
            args = entry["command"].split(b" ", 2)
            if args and args[0].lower() in (b"evalsha", b"eval") and len(args) > 1:
                name = names.get(args[1].decode(), "?" + args[1].decode()[:8])
                counts.scripts[name] += 1
                counts.script_us[name] += int(entry["duration"])
        self.client.close()
        return counts


def report(label: str, counts: list[Counts]) -> str:
    """Mean calls per build (and microseconds per call for Redis), one line each."""
    n = len(counts)
    lines = [f"{label}: mean of {n} builds"]
    cpu: Counter[str] = Counter()
    for c in counts:
        cpu.update(c.cpu)
    lines.append("  CPU s per build: " + ", ".join(f"{name} {seconds / n:.2f}" for name, seconds in cpu.items()))
    for title, attr, us_attr in (("gRPC calls", "rpcs", None), ("Redis commands", "commands", "command_us"),
                                 ("scripts", "scripts", "script_us")):
        total: Counter[str] = Counter()
        us: Counter[str] = Counter()
        for c in counts:
            total.update(getattr(c, attr))
            if us_attr:
                us.update(getattr(c, us_attr))
        if not total:
            continue
        lines.append(f"  {title} (per build, total {sum(total.values()) / n:.0f}"
                     + (f", {sum(us.values()) / n / 1e3:.0f} ms" if us_attr else "") + "):")
        for name, calls in total.most_common():
            extra = f"  {us[name] / n / 1e3:8.1f} ms  {us[name] / max(calls, 1):6.1f} us/call" if us_attr else ""
            lines.append(f"    {name:<28} {calls / n:9.1f}{extra}")
    return "\n".join(lines)
