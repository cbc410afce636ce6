"""framebus against the lean references of the same run: ratios per cell and the
must-show checks of issue 10.

A ratio is the median of framebus's figure over the median of the reference's, for
the same (size, consumers, case). Its spread is the min–max of the ratios of the
two transports' figures repetition by repetition (each repetition runs them close
together in time, interleaved, so pairing them cancels slow drift).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any, NamedTuple

from framebus_bench.transports import FLOOR, LEAN_SEQPACKET, LEAN_ZMQ
from framebus_bench.workload import FLAT, PACED

#: each framebus variant and the lean reference of its channel
VARIANTS: dict[str, str] = {"framebus-socket": LEAN_SEQPACKET, "framebus": LEAN_ZMQ}
LEAN = "lean"  # stands for the variant's own reference in METRICS


class Metric(NamedTuple):
    key: str
    label: str
    mode: str
    field: str
    reference: str  # FLOOR or LEAN
    unit: str


METRICS: tuple[Metric, ...] = (
    Metric("p50_vs_floor", "paced p50 ÷ pipe floor", PACED, "latency_p50_us", FLOOR, "µs"),
    Metric("p50_vs_lean", "paced p50 ÷ lean", PACED, "latency_p50_us", LEAN, "µs"),
    Metric("consumer_cpu_vs_lean", "consumer CPU/frame flat ÷ lean", FLAT, "consumer_cpu_us_per_frame", LEAN, "µs/frame"),
    Metric("producer_cpu_paced_vs_lean", "producer CPU/publish paced ÷ lean", PACED, "producer_cpu_us_per_publish", LEAN, "µs/publish"),
    Metric("producer_cpu_flat_vs_lean", "producer CPU/publish flat ÷ lean", FLAT, "producer_cpu_us_per_publish", LEAN, "µs/publish"),
    Metric("fps_vs_lean", "flat fps/consumer ÷ lean", FLAT, "fps_per_consumer", LEAN, "fps"),
)

Cell = tuple[str, int, str]  # size, consumers, case


def _by_rep(records: list[dict[str, Any]]) -> dict[tuple[str, Cell, str, str], dict[int, float]]:
    """(transport, cell, mode, field) -> {rep: value}."""
    out: dict[tuple[str, Cell, str, str], dict[int, float]] = defaultdict(dict)
    fields = {m.field for m in METRICS}
    for r in records:
        for f in fields:
            if isinstance(r.get(f), (int, float)):
                out[(r["transport"], (r["size"], r["consumers"], r["case"]), r["mode"], f)][r["rep"]] = r[f]
    return out


def ratios(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (framebus variant, size, consumers, case, metric) that both sides measured:
    ``ratio`` (of the medians), ``range`` ([min, max] of the per-repetition ratios),
    ``value`` and ``reference_value`` (the medians)."""
    reps = _by_rep(records)
    cells = sorted({(r["size"], r["consumers"], r["case"]) for r in records},
                   key=lambda c: (next(r["frame_bytes"] for r in records if r["size"] == c[0]), c[1], c[2]))
    out = []
    for name, lean in VARIANTS.items():
        for cell in cells:
            for m in METRICS:
                ref = lean if m.reference == LEAN else m.reference
                a, b = reps.get((name, cell, m.mode, m.field)), reps.get((ref, cell, m.mode, m.field))
                if not a or not b:
                    continue
                ma, mb = statistics.median(a.values()), statistics.median(b.values())
                if not mb:
                    continue
                paired = [a[k] / b[k] for k in a.keys() & b.keys() if b[k]]
                out.append({
                    "transport": name, "reference": ref, "size": cell[0], "consumers": cell[1], "case": cell[2],
                    "metric": m.key, "ratio": round(ma / mb, 2),
                    "range": [round(min(paired), 2), round(max(paired), 2)] if paired else None,
                    "value": round(ma, 1), "reference_value": round(mb, 1), "unit": m.unit,
                })
    return out


# --------------------------------------------------------------------------- must show


class Check(NamedTuple):
    target: str
    met: bool | None  # None: not measured in this run
    evidence: str


def _worst(rows: list[dict[str, Any]], name: str, metric: str, *, lowest: bool = False,
           consumers: int | None = None) -> dict[str, Any] | None:
    pick = [r for r in rows if r["transport"] == name and r["metric"] == metric
            and (consumers is None or r["consumers"] == consumers)]
    if not pick:
        return None
    return (min if lowest else max)(pick, key=lambda r: r["ratio"])


def _where(r: dict[str, Any]) -> str:
    spread = f", reps {r['range'][0]:.2f}–{r['range'][1]:.2f}×" if r.get("range") and r["range"][0] != r["range"][1] else ""
    return (f"{r['ratio']:.2f}× at {r['size']}, {r['consumers']} cons, {r['case']} "
            f"({r['value']:g} vs {r['reference_value']:g} {r['unit']} {r['reference']}{spread})")


def _ratio_check(rows: list[dict[str, Any]], target: str, name: str, metrics: tuple[str, ...],
                 limit: float, at_least: bool = False, consumers: int | None = None) -> Check:
    found = [w for m in metrics if (w := _worst(rows, name, m, lowest=at_least, consumers=consumers))]
    if not found:
        need = f"{name} and {VARIANTS[name]}" + (f" with {consumers} consumer(s)" if consumers else "")
        return Check(target, None, f"not measured in this run (needs cells of {need})")
    worst = (min if at_least else max)(found, key=lambda r: r["ratio"])
    ok = worst["ratio"] >= limit if at_least else worst["ratio"] <= limit
    return Check(target, ok, f"worst {_where(worst)}")


def _iceoryx2_check(results: list[dict[str, Any]]) -> Check:
    target = "framebus-socket paced p50 below iceoryx2's at every size"
    idx = {(r["transport"], r["size"], r["consumers"], r["case"]): r for r in results if r["mode"] == PACED}
    pairs = [(a["latency_p50_us"] / b["latency_p50_us"], a, b) for (t, *cell), a in idx.items()
             if t == "framebus-socket" and (b := idx.get(("iceoryx2", *cell)))
             and a["latency_p50_us"] and b["latency_p50_us"]]
    if not pairs:
        return Check(target, None, "not measured in this run (needs framebus-socket and iceoryx2)")
    ratio, a, b = max(pairs, key=lambda p: p[0])
    return Check(target, ratio < 1, f"worst {ratio:.2f}× at {a['size']}, {a['consumers']} cons, {a['case']} "
                                   f"({a['latency_p50_us']} vs {b['latency_p50_us']} µs), {len(pairs)} cells")


def _size_check(results: list[dict[str, Any]]) -> Check:
    target = "framebus-socket 4K paced p50 ≤ 1.2× its 64×64 p50"
    idx = {(r["transport"], r["size"], r["consumers"], r["case"]): r for r in results if r["mode"] == PACED}
    pairs = [(a["latency_p50_us"] / b["latency_p50_us"], a, b) for (t, size, n, case), a in idx.items()
             if t == "framebus-socket" and size == "3840x2160"
             and (b := idx.get((t, "64x64", n, case))) and a["latency_p50_us"] and b["latency_p50_us"]]
    if not pairs:
        return Check(target, None, "not measured in this run (needs 64x64 and 3840x2160)")
    ratio, a, b = max(pairs, key=lambda p: p[0])
    return Check(target, ratio <= 1.2, f"worst {ratio:.2f}× at {a['consumers']} cons, {a['case']} "
                                      f"({a['latency_p50_us']} vs {b['latency_p50_us']} µs)")


def must_show(rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[Check]:
    """Issue 10's must-show thresholds on this run, worst case over every cell measured.
    ``rows`` from :func:`ratios`, ``results`` the median rows."""
    s, z = "framebus-socket", "framebus"
    return [
        _ratio_check(rows, f"{s} paced p50 ≤ 1.5× pipe floor", s, ("p50_vs_floor",), 1.5),
        _ratio_check(rows, f"{s} consumer CPU/frame flat ≤ 1.5× lean-seqpacket", s, ("consumer_cpu_vs_lean",), 1.5),
        _ratio_check(rows, f"{z} (zmq) paced p50 ≤ 1.3× lean-zmq", z, ("p50_vs_lean",), 1.3),
        _ratio_check(rows, f"{z} (zmq) consumer CPU/frame flat ≤ 1.3× lean-zmq", z, ("consumer_cpu_vs_lean",), 1.3),
        *(_ratio_check(rows, f"{n} producer CPU/publish, 1 consumer, ≤ 2× {VARIANTS[n]}", n,
                       ("producer_cpu_paced_vs_lean", "producer_cpu_flat_vs_lean"), 2.0, consumers=1) for n in (s, z)),
        *(_ratio_check(rows, f"{n} flat fps/consumer ≥ 0.8× {VARIANTS[n]}", n, ("fps_vs_lean",), 0.8, at_least=True)
          for n in (s, z)),
        _iceoryx2_check(results),
        _size_check(results),
    ]


# --------------------------------------------------------------------------- markdown


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "–"
    lo_hi = r.get("range")
    return f"{r['ratio']:.2f} ({lo_hi[0]:.2f}–{lo_hi[1]:.2f})" if lo_hi and lo_hi[0] != lo_hi[1] else f"{r['ratio']:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per (variant, size, consumers, case), one column per metric."""
    idx = {(r["transport"], r["size"], r["consumers"], r["case"], r["metric"]): r for r in rows}
    cells = list(dict.fromkeys((r["transport"], r["size"], r["consumers"], r["case"]) for r in rows))
    head = "| transport | size | cons | case | " + " | ".join(m.label for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (4 + len(METRICS))]
    for cell in cells:
        lines.append("| " + " | ".join(str(v) for v in cell) + " | "
                     + " | ".join(_cell(idx.get((*cell, m.key))) for m in METRICS) + " |")
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]], checks: list[Check]) -> list[str]:
    """The report's two sections: the ratio table and the must-show checks."""
    if not rows and all(c.met is None for c in checks):
        return []
    refs = ", ".join(f"{n} ÷ {lean}" for n, lean in VARIANTS.items())
    parts = ["## framebus ÷ the lean references", "",
             f"Ratios of medians ({refs}; p50 also ÷ {FLOOR}); in brackets the min–max of the "
             "ratios repetition by repetition. Below 1 is better, except fps.", "", table(rows), "",
             "## Targets: issue 10 must-show (worst case over the cells of this run)", ""]
    parts += [f"- {'MET' if c.met else 'MISSED' if c.met is False else 'NOT MEASURED'} {c.target}: {c.evidence}"
              for c in checks]
    return parts + [""]
