"""Reporting: added latency against direct, the table, the design targets, the router
against the minimal probe, the JSON document and a summary of py-spy profiles."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from loadtest.bench.measure import Result
from loadtest.bench.scenarios import BASELINES, MINIMAL_SUFFIX, MODES, NATIVE_BASELINES, Setup

# Team design targets (printed next to the measurements; never used to alter them).
TARGET_CPU_HEADERS_MAX_US = 200.0
TARGET_CPU_HEADERS_FIXED_US = 400.0
TARGET_CPU_BODY_US = 300.0
TARGET_ADDED_P50_MS = 0.6
TARGET_ADDED_P99_MS = 2.5
TARGET_THROUGHPUT_RATIO = 0.33
# Native routing (the xDS issue): ratios to Envoy-direct with the same body, same run.
TARGET_NATIVE_RPS_RATIO = 0.85
TARGET_NATIVE_ADDED_P50_MS = 0.15
TARGET_NATIVE_ADDED_P99_MS = 0.5
# The gateway (issue 14): router CPU with API key + quotas over the headers row, same run.
TARGET_GATEWAY_CPU_RATIO = 1.15
GATEWAY_ROWS = ("headers_gateway", "headers_gateway_redis")


def add_deltas(results: dict[str, dict[str, Result]], setups: list[Setup]) -> None:
    """added_* against ``direct`` (same mode); ``*_same_body`` against the matching baseline."""
    for setup in setups:
        if not setup.routed or setup.name not in results:
            continue
        for mode, res in results[setup.name].items():
            base = results.get("direct", {}).get(mode)
            if base is not None:
                res.added_p50_ms = res.p50_ms - base.p50_ms
                res.added_p99_ms = res.p99_ms - base.p99_ms
                res.extra["rps_vs_direct"] = round(res.rps / base.rps, 3) if base.rps else 0.0
            same = results.get(setup.baseline, {}).get(mode)
            if same is not None and setup.baseline != "direct":
                res.extra["added_p50_ms_same_body"] = round(res.p50_ms - same.p50_ms, 3)
                res.extra["added_p99_ms_same_body"] = round(res.p99_ms - same.p99_ms, 3)
                res.extra["rps_vs_same_body"] = round(res.rps / same.rps, 3) if same.rps else 0.0


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(results: dict[str, dict[str, Result]]) -> str:
    head = (
        f"{'setup':<15}{'mode':<6}{'rps':>8}{'p50 ms':>9}{'p99 ms':>9}{'+p50':>8}{'+p99':>8}"
        f"{'errors':>8}{'router':>9}{'envoy':>8}{'nginx':>8}{'k6':>7}{'busy%':>7}{'other%':>8}"
    )
    units = f"{'':<15}{'':<6}{'':>8}{'':>9}{'':>9}{'ms':>8}{'ms':>8}{'':>8}"
    units += f"{'us/req':>9}{'us/req':>8}{'us/req':>8}{'us/req':>7}{'':>7}"
    lines = [head, units, "-" * len(head)]
    for name, modes in results.items():
        for mode, r in modes.items():
            lines.append(
                f"{name:<15}{mode:<6}{r.rps:8.0f}{r.p50_ms:9.3f}{r.p99_ms:9.3f}"
                f"{_opt(r.added_p50_ms, '8.3f'):>8}{_opt(r.added_p99_ms, '8.3f'):>8}"
                f"{r.errors:8d}{r.router_cpu_us_per_req:9.0f}{r.envoy_cpu_us_per_req:8.0f}"
                f"{r.nginx_cpu_us_per_req:8.0f}{r.k6_cpu_us_per_req:7.0f}{r.machine_busy_pct:7.0f}"
                f"{r.other_busy_pct:8.0f}"
            )
    return "\n".join(lines)


def targets(results: dict[str, dict[str, Result]]) -> list[str]:
    """The team's design targets next to what was measured (ok / MISS)."""
    rows: list[tuple[str, float | None, float, bool]] = []

    def get(setup: str, mode: str) -> Result | None:
        return results.get(setup, {}).get(mode)

    def cpu(setup: str, mode: str, limit: float, label: str) -> None:
        r = get(setup, mode)
        if r is not None:
            rows.append((label, r.router_cpu_us_per_req, limit, r.router_cpu_us_per_req <= limit))

    cpu("headers", "max", TARGET_CPU_HEADERS_MAX_US, "router CPU headers, max (us/req)")
    cpu("headers", "fixed", TARGET_CPU_HEADERS_FIXED_US, "router CPU headers, fixed (us/req)")
    cpu("body", "max", TARGET_CPU_BODY_US, "router CPU body 4 KiB, max (us/req)")
    cpu("body", "fixed", TARGET_CPU_BODY_US, "router CPU body 4 KiB, fixed (us/req)")
    for name in ("headers", "body"):
        r = get(name, "fixed")
        if r is not None and r.added_p50_ms is not None and r.added_p99_ms is not None:
            rows.append(
                (
                    f"added p50 {name}, fixed (ms)",
                    r.added_p50_ms,
                    TARGET_ADDED_P50_MS,
                    r.added_p50_ms <= TARGET_ADDED_P50_MS,
                )
            )
            rows.append(
                (
                    f"added p99 {name}, fixed (ms)",
                    r.added_p99_ms,
                    TARGET_ADDED_P99_MS,
                    r.added_p99_ms <= TARGET_ADDED_P99_MS,
                )
            )
    direct = get("direct", "max")
    for name in ("headers", "body"):
        r = get(name, "max")
        if direct is not None and r is not None and direct.rps:
            ratio = r.rps / direct.rps
            rows.append(
                (
                    f"max rps {name} / direct",
                    ratio,
                    TARGET_THROUGHPUT_RATIO,
                    ratio >= TARGET_THROUGHPUT_RATIO,
                )
            )
    for name, base in NATIVE_BASELINES.items():  # native rows against same-body direct
        r, b = get(name, "max"), get(base, "max")
        if r is not None and b is not None and b.rps:
            ratio = r.rps / b.rps
            rows.append((f"max rps {name} / {base}", ratio, TARGET_NATIVE_RPS_RATIO,
                         ratio >= TARGET_NATIVE_RPS_RATIO))  # fmt: skip
        r = get(name, "fixed")
        if r is not None and r.added_p50_ms is not None and r.added_p99_ms is not None:
            rows.append(
                (
                    f"added p50 {name}, fixed (ms)",
                    r.added_p50_ms,
                    TARGET_NATIVE_ADDED_P50_MS,
                    r.added_p50_ms <= TARGET_NATIVE_ADDED_P50_MS,
                )
            )
            rows.append(
                (
                    f"added p99 {name}, fixed (ms)",
                    r.added_p99_ms,
                    TARGET_NATIVE_ADDED_P99_MS,
                    r.added_p99_ms <= TARGET_NATIVE_ADDED_P99_MS,
                )
            )
    out = []
    for label, value, limit, ok in rows:
        cmp = ">=" if "rps" in label else "<="
        out.append(
            f"  {label:<38} {_opt(value, '9.3f')}  target {cmp} {limit:<7g} "
            f"{'ok' if ok else 'MISS'}"
        )
    return out


def gateway_versus_headers(results: dict[str, dict[str, Result]]) -> list[str]:
    """Router CPU per request with authentication + quotas against the headers-only row
    (same path, same run), and the Redis commands per request of the shared store."""
    out = []
    for name in GATEWAY_ROWS:
        for mode in MODES:
            a = results.get("headers", {}).get(mode)
            b = results.get(name, {}).get(mode)
            if a is None or b is None or not a.router_cpu_us_per_req:
                continue
            ratio = b.router_cpu_us_per_req / a.router_cpu_us_per_req
            ok = "ok" if ratio <= TARGET_GATEWAY_CPU_RATIO else "MISS"
            ops = b.extra.get("redis_ops_per_req")
            redis = f"   redis {ops:.4f} ops/req" if ops is not None else ""
            out.append(
                f"  {name:<22} {mode:<5} router CPU {b.router_cpu_us_per_req:6.0f} vs headers "
                f"{a.router_cpu_us_per_req:6.0f} us/req (x{ratio:.3f}, target <= "
                f"{TARGET_GATEWAY_CPU_RATIO:g} {ok})   rps {b.rps:6.0f} vs {a.rps:6.0f}{redis}"
            )
    return out


def uds_versus_tcp(results: dict[str, dict[str, Result]]) -> list[str]:
    """ext_proc over a Unix socket against TCP loopback, same run."""
    out = []
    for tcp in ("headers", "body"):
        for mode in MODES:
            a = results.get(tcp, {}).get(mode)
            b = results.get(f"{tcp}_uds", {}).get(mode)
            if a is None or b is None or not a.router_cpu_us_per_req:
                continue
            ratio = b.router_cpu_us_per_req / a.router_cpu_us_per_req
            out.append(
                f"  {tcp:<8} {mode:<5} router CPU uds {b.router_cpu_us_per_req:6.0f} vs tcp "
                f"{a.router_cpu_us_per_req:6.0f} us/req (x{ratio:.2f})"
                f"   p50 {b.p50_ms:.3f} vs {a.p50_ms:.3f} ms   rps {b.rps:6.0f} vs {a.rps:6.0f}"
            )
    return out


def versus_minimal(results: dict[str, dict[str, Result]]) -> list[str]:
    """Router CPU/request, p50 and rps next to the minimal probe's, per setup and mode."""
    out = []
    for name, modes in results.items():
        probe = results.get(name + MINIMAL_SUFFIX)
        if name.endswith(MINIMAL_SUFFIX) or probe is None:
            continue
        for mode, r in modes.items():
            m = probe.get(mode)
            if m is None:
                continue
            base = m.router_cpu_us_per_req
            ratio = r.router_cpu_us_per_req / base if base else 0.0
            out.append(
                f"  {name:<10} {mode:<5} router CPU {r.router_cpu_us_per_req:6.0f} vs "
                f"{m.router_cpu_us_per_req:5.0f} us/req (x{ratio:.2f})   p50 {r.p50_ms:6.3f} vs "
                f"{m.p50_ms:6.3f} ms   rps {r.rps:6.0f} vs {m.rps:6.0f}"
            )
    return out


def json_doc(results: dict[str, dict[str, Result]], planned: list[Setup]) -> dict[str, Any]:
    """What ``--json`` writes: ``setups`` in plan order, plus ``baselines`` if any ran."""
    doc: dict[str, Any] = {
        "setups": {
            name: {mode: r.as_json() for mode, r in results[name].items()}
            for name in (s.name for s in planned)
            if name in results
        }
    }
    base = {b.name: results[b.name] for b in BASELINES if b.name in results}
    if base:
        doc["baselines"] = {
            name: {mode: r.as_json() for mode, r in modes.items()} for name, modes in base.items()
        }
    return doc


def summarize_speedscope(path: Path, top: int = 15) -> list[str]:
    """Top frames of a py-spy speedscope profile (self and inclusive share of samples)."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    self_w: Counter[int] = Counter()
    incl_w: Counter[int] = Counter()
    buckets: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0.0
    for prof in doc["profiles"]:
        samples = prof.get("samples", [])
        weights = prof.get("weights", [1] * len(samples))
        thread = str(prof.get("name", "?")).split('"')
        tname = thread[1] if len(thread) > 1 else thread[0]
        for stack, w in zip(samples, weights, strict=False):
            if not stack or frames[stack[-1]].get("name") in _IDLE_LEAVES:
                continue
            total += w
            threads[tname] += w
            self_w[stack[-1]] += w
            for idx in set(stack):
                incl_w[idx] += w
            buckets[_bucket(frames, stack, tname)] += w
    if not total:
        return [f"  {path.name}: no samples"]

    def name(idx: int) -> str:
        f = frames[idx]
        file = str(f.get("file", ""))
        short = "/".join(file.split("/")[-2:]) if file else ""
        line = f.get("line")
        return f"{f.get('name', '?')} ({short}:{line})" if short else str(f.get("name", "?"))

    unit = doc["profiles"][0].get("unit", "") if doc["profiles"] else ""
    out = [f"  {path.name}: {total:.2f} {unit} sampled (active, all threads)"]
    out.append("    by thread:")
    for tname, w in threads.most_common():
        out.append(f"      {100 * w / total:5.1f}%  {tname}")
    out.append("    by component (innermost recognised frame):")
    for bucket, w in buckets.most_common():
        out.append(f"      {100 * w / total:5.1f}%  {bucket}")
    out.append("    top self:")
    for idx, w in self_w.most_common(top):
        out.append(f"      {100 * w / total:5.1f}%  {name(idx)}")
    out.append("    top inclusive:")
    for idx, w in incl_w.most_common(top + 2):
        if str(frames[idx].get("name", "")).startswith("process "):
            continue
        out.append(f"      {100 * w / total:5.1f}%  {name(idx)}")
    return out


# With --native, py-spy also samples threads blocked in these (waiting, not working).
_IDLE_LEAVES = frozenset({"epoll_wait", "epoll_pwait", "poll", "select", "pthread_cond_wait"})

_BUCKETS = (
    ("prometheus_client", "prometheus"),
    ("google/protobuf", "protobuf"),
    ("_pb2", "protobuf"),
    ("upb", "protobuf"),
    ("grpc_health", "grpc"),
    ("grpc", "grpc"),
    ("extproc/", "router code (extproc/)"),
    ("orjson", "router code (extproc/)"),
    ("uvloop", "event loop (asyncio/uvloop)"),
    ("Runner.run", "C under the event loop: uvloop + grpc aio Cython + upb (no --native)"),
    ("asyncio", "event loop (asyncio/uvloop)"),
    ("logging", "logging"),
)


def _bucket(frames: list[dict[str, Any]], stack: list[int], thread: str) -> str:
    for idx in reversed(stack):
        f = frames[idx]
        where = f"{f.get('file', '')} {f.get('name', '')}"
        for needle, bucket in _BUCKETS:
            if needle in where:
                return bucket
    if "_poll_wrapper" in thread:
        return "grpc (completion-queue poller thread)"
    return "other"
