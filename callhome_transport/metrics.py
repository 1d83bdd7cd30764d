"""A few Prometheus metrics without a client library (text exposition format
0.0.4): counters and histograms with labels, gauges read at render time."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

__all__ = ["Metrics"]

LabelKey = tuple[tuple[str, str], ...]
HANDSHAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(key: LabelKey) -> str:
    if not key:
        return ""
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in key)
    return "{" + inner + "}"


class Metrics:
    """Counters, histograms and gauges, rendered as Prometheus text."""

    def __init__(self) -> None:
        self._help: dict[str, tuple[str, str]] = {}
        self._counters: dict[str, dict[LabelKey, float]] = {}
        self._histograms: dict[str, tuple[Sequence[float], dict[LabelKey, list[float]]]] = {}
        self._gauges: dict[str, Callable[[], dict[LabelKey, float]]] = {}
        self._grouped: dict[str, Callable[[], dict[str, dict[LabelKey, float]]]] = {}

    def counter(self, name: str, help_text: str) -> None:
        self._help[name] = ("counter", help_text)
        self._counters.setdefault(name, {})

    def histogram(self, name: str, help_text: str, buckets: Sequence[float] = HANDSHAKE_BUCKETS) -> None:
        self._help[name] = ("histogram", help_text)
        self._histograms.setdefault(name, (tuple(buckets), {}))

    def gauge(self, name: str, help_text: str, read: Callable[[], dict[LabelKey, float]]) -> None:
        self._help[name] = ("gauge", help_text)
        self._gauges[name] = read

    def gauges(self, helps: dict[str, str], read: Callable[[], dict[str, dict[LabelKey, float]]]) -> None:
        """Several gauges read together, once per render (one walk of what
        they count): ``read`` returns each one's series by name."""
        for name, help_text in helps.items():
            self._help[name] = ("gauge", help_text)
            self._grouped[name] = read

    def counter_reading(self, name: str, help_text: str, read: Callable[[], dict[LabelKey, float]]) -> None:
        """A counter kept elsewhere (a process-wide count), read at render time."""
        self._help[name] = ("counter", help_text)
        self._gauges[name] = read

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        series = self._counters[name]
        key = tuple(sorted(labels.items()))
        series[key] = series.get(key, 0.0) + amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        buckets, series = self._histograms[name]
        key = tuple(sorted(labels.items()))
        counts = series.setdefault(key, [0.0] * (len(buckets) + 2))  # buckets..., +Inf, sum
        counts[bisect.bisect_left(buckets, value)] += 1
        counts[-1] += value

    def value(self, name: str, **labels: str) -> float:
        return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        read_together: dict[int, dict[str, dict[LabelKey, float]]] = {}
        for name, (kind, help_text) in self._help.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            group = self._grouped.get(name)
            if group is not None:
                values = read_together.get(id(group))
                if values is None:
                    values = read_together[id(group)] = group()
                for key, value in sorted(values.get(name, {}).items()):
                    lines.append(f"{name}{_labels(key)} {value:g}")
            elif kind == "counter" and name not in self._gauges:
                for key, value in sorted(self._counters[name].items()):
                    lines.append(f"{name}{_labels(key)} {value:g}")
            elif name in self._gauges:
                for key, value in sorted(self._gauges[name]().items()):
                    lines.append(f"{name}{_labels(key)} {value:g}")
            else:
                buckets, series = self._histograms[name]
                for key, counts in sorted(series.items()):
                    cumulative = 0.0
                    for bound, count in zip(buckets, counts, strict=False):
                        cumulative += count
                        lines.append(f"{name}_bucket{_labels((*key, ('le', f'{bound:g}')))} {cumulative:g}")
                    cumulative += counts[len(buckets)]
                    lines.append(f"{name}_bucket{_labels((*key, ('le', '+Inf')))} {cumulative:g}")
                    lines.append(f"{name}_sum{_labels(key)} {counts[-1]:g}")
                    lines.append(f"{name}_count{_labels(key)} {cumulative:g}")
        return "\n".join(lines) + "\n"
