"""The pytest-vlmbench section of pytest's terminal summary.

Imported at the end of a session that benchmarked something.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_vlmbench.models import devices

if TYPE_CHECKING:
    from pytest_vlmbench.plugin.session import VlmSession
    from pytest_vlmbench.results.models import BenchmarkEntry, SweepInfo


def power_line(p: dict[str, Any]) -> str:
    """One line: which meter measured, at what cost; or, once, why there is none."""
    if p["meter"] is None:
        return (f"power: no meter ({p['requested']}): {p['absent_reason']}; "
                "energy figures are absent, not zero")
    cost = p.get("cost") or {}
    idle = (p.get("idle") or {}).get("power_w")
    parts = [
        f"power: {p['meter']} every {1000 * p['interval_s']:.0f} ms, {p['samples']} readings",
        f"idle {idle:.2f} W" if idle is not None else "no idle baseline",
    ]
    if cost.get("cpu_fraction") is not None:
        parts.append(f"sampling cost {100 * cost['cpu_fraction']:.2f}% of one core")
    return "; ".join(parts)


def _write_comparison(tr: Any, vlm: VlmSession) -> None:
    gate = vlm.gate
    if gate is None:
        return
    if gate.comparison is None:
        tr.write_line(f"comparison with the baseline failed: {gate.error}", red=True)
        return

    from pytest_vlmbench.compare import render_table

    c = gate.comparison
    tr.write_line(f"compared with {gate.described}: {c.headline}",
                  red=bool(c.gated), green=not c.gated)
    for line in render_table(c):
        tr.write_line(line)
    if gate.summary_path is not None:
        tr.write_line(f"comparison summary: {gate.summary_path}")


def _counts(vlm: VlmSession) -> str:
    """What the benchmarks measured, as they ran it (a test may override the session's
    --vlm-samples and --vlm-warmup)."""
    def spread(values: list[int]) -> str:
        low, high = min(values), max(values)
        return str(low) if low == high else f"{low}-{high}"

    ran = [b for b in vlm.benchmarks if isinstance(b.get("samples"), int)]
    if not ran and vlm.windows and not vlm.loads():
        return f"{len(vlm.windows)} power window(s), no benchmark"
    if not ran:
        return f"{vlm.options.samples} samples, {vlm.options.warmup} warm-up per benchmark"
    samples = spread([b["samples"] for b in ran])
    warmup = spread([int((b.get("warmup") or {}).get("requests", 0)) for b in ran])
    return (f"per benchmark: measured requests {samples}, warm-up {warmup} (session "
            f"default {vlm.options.samples} and {vlm.options.warmup}); "
            "ok/n: successful of measured requests")


def write_summary(tr: Any, vlm: VlmSession) -> None:
    """The session's section: the table, warnings, loads, servers, power, comparison and
    where the files are."""
    from pytest_vlmbench.report import table

    tr.section("pytest-vlmbench")
    if not (vlm.has_results() or vlm.merge_error):  # only workers lost: say which
        for line, red in fleet_lines(vlm):
            tr.write_line(line, red=red)
        return
    tr.write_line(f"device {vlm.device.name} ({vlm.detection.evidence}); {_counts(vlm)}")
    if vlm.thread_advice is not None:
        tr.write_line(f"warning: {vlm.thread_advice}", yellow=True)
    for backend, reason in vlm.fallbacks.items():
        tr.write_line(f"warning: {backend} models ran on the CPU, labelled "
                      f"{devices.CPU_FALLBACK} (--vlm-cpu-fallback): {reason}", yellow=True)
    if vlm.benchmarks:
        for line in table.render(vlm.benchmarks):
            tr.write_line(line)
    for b in vlm.benchmarks:
        for warning in b["warnings"]:
            tr.write_line(f"warning: {b['id']}: {warning}", yellow=True)
    for line in sweep_lines(vlm.benchmarks):
        tr.write_line(line)
    from pytest_vlmbench.report.quality import agreement_lines, quality_lines
    from pytest_vlmbench.report.video import video_lines

    for line in [*quality_lines(vlm.benchmarks), *agreement_lines(vlm.agreement()),
                 *video_lines(vlm.benchmarks)]:
        tr.write_line(line)
    merged = vlm.merged
    for line in table.render_windows(merged.get("windows", []) if merged else vlm.windows):
        tr.write_line(line)
    load_entries = merged["loads"] if merged else vlm.loads()
    loads = ", ".join(
        f"{e['model']}-{e['precision']} FAILED" if e.get("error") is not None
        else f"{e['model']}-{e['precision']} interrupted" if "load_s" not in e
        else f"{e['model']}-{e['precision']} x{e['count']} ({e['load_s']:.2f} s)"
        for e in load_entries
    )
    if loads:
        tr.write_line(f"model loads: {loads}")
    for line, died in server_lines(vlm):
        tr.write_line(line, red=died)
    if vlm.merge_error:
        tr.write_line(f"merging the pytest-xdist workers' results failed: {vlm.merge_error}",
                      red=True)
    for warning in vlm.merge_warnings:
        tr.write_line(f"warning: {warning}", yellow=True)
    if merged:
        workers = len(merged.get("runs", []))
        local = vlm.fleet is None or all(w.popen for w in vlm.fleet.workers.values())
        tr.write_line(f"merged {len(vlm.benchmarks)} benchmarks from {workers} pytest-xdist "
                      "workers" + (" (concurrent workers on one device distort each other's "
                                   "latencies)" if local else ""))
    for line, red in fleet_lines(vlm):
        tr.write_line(line, red=red)
    tr.write_line(power_line(merged["power"] if merged and "power" in merged
                             else vlm.document_power()))
    _write_comparison(tr, vlm)
    tr.write_line(f"results: {vlm.results_path}")
    if vlm.records_path.exists():
        tr.write_line(f"records: {vlm.records_path}")
    if vlm.log_path is not None and vlm.log_path.exists():
        tr.write_line(f"backend log: {vlm.log_path}")
    if vlm.history_line is not None:
        line, failed = vlm.history_line
        tr.write_line(line, red=failed)
    if vlm.report_line is not None:
        line, failed = vlm.report_line
        tr.write_line(line, red=failed)


def sweep_lines(benchmarks: list[BenchmarkEntry]) -> list[str]:
    """One line per load sweep: its levels and the highest that met every SLO."""
    seen: dict[str, SweepInfo] = {}
    for b in benchmarks:
        sweep = b.get("sweep")
        if sweep is not None:
            seen.setdefault(sweep["benchmark"], sweep)
    return [f"sweep {name}: levels {', '.join(s['levels'])}; highest meeting the SLOs: "
            f"{s['best'] or ('none' if not s['met_slo'] else 'the benchmark has no SLOs')}"
            for name, s in seen.items()]


def server_lines(vlm: VlmSession) -> list[tuple[str, bool]]:
    """Each managed server the session started: its cold start and log; one that died
    while the session needed it says how (True: said in red)."""
    lines = []
    for server in vlm.servers_started():
        if server.get("start_error"):
            lines.append((f"server {server['id']} ({server['kind']}) at {server['base_url']}: "
                          f"never became ready; log: {server['log']}", True))
            continue
        reason = server.get("exit_reason")
        text = (f"server {server['id']} ({server['kind']}) at {server['base_url']}: ready in "
                f"{server['cold_start_s']:.2f} s; log: {server['log']}")
        lines.append((text, False))
        if reason:
            lines.append((f"server {server['id']} died during the run: {reason}", True))
    return lines


def fleet_lines(vlm: VlmSession) -> list[tuple[str, bool]]:
    """One line per pytest-xdist worker: where it ran and what it brought back; a lost
    one says why and where its files are (True: said in red)."""
    if vlm.fleet is None:
        return []
    lines = []
    for w in vlm.fleet.workers.values():
        where = " ".join(p for p in (w.device, f"on {w.host}" if w.host else "") if p)
        head = f"{w.id} {where} ({w.gateway})" if where else f"{w.id} ({w.gateway})"
        counts = f"{w.benchmarks} benchmarks, {w.records} records" + (
            f", {w.skipped} skipped" if w.skipped else "")
        if w.status != "lost":
            tail = "" if w.status == "complete" else f"; {w.status}" + (
                f": {w.error}" if w.error else "")
            lines.append((f"{head}: {counts}{tail}", w.status == "failed"))
            continue
        if w.popen and w.run_id is not None:
            kept = f"its results up to there ({counts}) are merged, marked interrupted"
        elif w.popen:
            kept = "it wrote no results"
        else:
            run = vlm.run_id
            place = w.dir or (f"{w.cwd}/.vlmbench/workers-{run}/ (below its rootdir)" if w.cwd
                              else f"its rootdir's .vlmbench/workers-{run}/")
            kept = f"its records, if any, stay on that machine in {place}"
        lines.append((f"{head}: lost: {w.error}; {kept}", True))
    return lines
