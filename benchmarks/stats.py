"""From raw per-process figures to one record per (cell, phase), and medians over repetitions."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

import numpy as np

from framebus_bench.workload import CellSpec

KEY = ("transport", "size", "consumers", "case", "mode")
#: figures whose spread over the repetitions goes next to the median: ``<field>_range`` = [min, max]
SPREAD = ("latency_p50_us", "fps_per_consumer", "cpu_us_per_frame", "consumer_cpu_us_per_frame",
          "producer_cpu_us_per_publish")
_MB = 1 << 20


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)) / 1e3, 1) if values.size else None


def phase_records(spec: CellSpec, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per phase of one run of one cell."""
    n, dur = spec.consumers, spec.timing.duration
    prod_mem = raw["producer"]["memory"]
    cons_mem = [c["memory"] for c in raw["consumers"]]
    out = []
    for k, phase in enumerate(spec.phases):
        p = raw["producer"]["phases"][k]
        cs = [c["phases"][k] for c in raw["consumers"]]
        received = [c["received"] for c in cs]
        delivered = sum(received)
        lat = np.concatenate([np.frombuffer(c["latency_ns"], np.int64) for c in cs])
        cpu_ns = p["cpu_ns"] + sum(c["cpu_ns"] for c in cs)
        per = (lambda ns: round(ns / delivered / 1e3, 1)) if delivered else (lambda ns: None)
        out.append(
            {
                "transport": spec.transport,
                "size": spec.frame.key,
                "format": spec.frame.fourcc,
                "frame_bytes": spec.frame.nbytes,
                "consumers": n,
                "case": phase.case,
                "mode": phase.mode,
                "rep": spec.rep,
                "fps_per_consumer": round(delivered / n / dur, 1),
                "fps_min_consumer": round(min(received) / dur, 1),
                "published_fps": round(p["published"] / dur, 1),
                "delivered_pct": round(100.0 * delivered / (n * p["published"]), 1) if p["published"] else None,
                "latency_p50_us": _pct(lat, 50),
                "latency_p99_us": _pct(lat, 99),
                "latency_samples": int(lat.size),
                "cpu_us_per_frame": per(cpu_ns),
                "producer_cpu_us_per_frame": per(p["cpu_ns"]),
                "consumer_cpu_us_per_frame": per(sum(c["cpu_ns"] for c in cs)),
                "producer_cpu_us_per_publish": round(p["cpu_ns"] / p["published"] / 1e3, 1) if p["published"] else None,
                "dropped_by_producer": p["dropped"],
                "bad_frames": sum(c["bad"] for c in cs),
                "producer_peak_rss_mb": round(prod_mem["peak_rss"] / _MB, 1),
                "producer_uss_mb": round(prod_mem["uss"] / _MB, 1),
                "consumer_peak_rss_mb": round(max(m["peak_rss"] for m in cons_mem) / _MB, 1),
                "consumer_uss_mb": round(max(m["uss"] for m in cons_mem) / _MB, 1),
                "background_cpu_pct": raw.get("background_cpu_pct"),
            }
        )
    return out


def medians(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median of every figure over the repetitions of each (transport, size, consumers, case, mode),
    and the min–max of the :data:`SPREAD` figures."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[tuple(r[k] for k in KEY)].append(r)
    out = []
    for rows in groups.values():
        merged: dict[str, Any] = {k: rows[0][k] for k in (*KEY, "format", "frame_bytes")}
        merged["reps"] = len(rows)
        for field in rows[0]:
            if field in merged or field == "rep":
                continue
            values = [r[field] for r in rows if isinstance(r[field], (int, float))]
            merged[field] = round(statistics.median(values), 1) if values else None
            if field in SPREAD:
                merged[field + "_range"] = [min(values), max(values)] if values else None
        out.append(merged)
    return out
