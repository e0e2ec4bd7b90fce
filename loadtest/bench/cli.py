"""Command line (``scripts/bench``, ``python -m loadtest.bench``) and the run itself."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from extproc.ops.procs import PORTS
from loadtest.bench.cpu import preflight_busy
from loadtest.bench.measure import Result, run_setup
from loadtest.bench.processes import REAPER, ROOT, Nginx
from loadtest.bench.report import (
    add_deltas,
    gateway_versus_headers,
    json_doc,
    summarize_speedscope,
    table,
    targets,
    uds_versus_tcp,
    versus_minimal,
)
from loadtest.bench.scenarios import (
    ALL_SETUPS,
    BASELINES,
    DEFAULT_SETUPS,
    ROUTERS,
    VALIDATION_SETUPS,
    Options,
    plan,
    write_bodies,
)
from loadtest.bench.scheduling import SCENARIO_NAMES, run_scenarios
from loadtest.bench.scheduling import report as scheduling_report

FAILED: list[str] = []
"""Setups that failed in this run (reported at the end; the exit status is then 1)."""


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Envoy direct vs Envoy + model-router, on the same nginx backends.",
    )
    p.add_argument("--quick", action="store_true", help="5 s runs, short warm-up (< 90 s total)")
    p.add_argument("--duration", type=float, default=None, help="seconds per run (default 20)")
    p.add_argument("--vus", type=int, default=64, help="VUs for the max-throughput runs")
    p.add_argument("--rate", type=int, default=500, help="req/s for the fixed-rate runs")
    p.add_argument("--workers", type=int, default=1, help="router workers (listener.workers)")
    p.add_argument(
        "--pin-cpu",
        action="store_true",
        help="listener.pin_cpu: each router worker on one CPU (model-router only)",
    )
    p.add_argument(
        "--envoy-concurrency",
        type=int,
        default=1,
        help="Envoy worker threads, same for every setup (default 1; see README)",
    )
    p.add_argument("--backends", type=int, default=2, help="nginx ports (deployments)")
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also run direct with the small and 256 KiB bodies (same-body added latency)",
    )
    p.add_argument(
        "--setups",
        default=",".join(DEFAULT_SETUPS),
        help="comma-separated subset of: " + ", ".join(s.name for s in ALL_SETUPS),
    )
    p.add_argument(
        "--validation",
        action="store_true",
        help="add the request-understanding setups: "
        + ", ".join(s.name for s in VALIDATION_SETUPS),
    )
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument(
        "--scenarios",
        default="",
        help="scheduling quality on llm-d-inference-sim instead of the setups, comma-"
        "separated: " + ", ".join(SCENARIO_NAMES) + " (profiles side by side, one run)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy record the router during max runs; speedscope files in DIR",
    )
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    p.add_argument(
        "--router",
        choices=ROUTERS,
        default="model-router",
        help="what answers ext_proc in headers/body/body_256k: the router, the minimal "
        "probe (loadtest/minimal_extproc.py, rows suffixed _min), or both (default "
        "model-router)",
    )
    a = p.parse_args(argv)
    scenarios = tuple(s.strip() for s in a.scenarios.split(",") if s.strip())
    unknown = [s for s in scenarios if s not in SCENARIO_NAMES]
    if unknown:
        p.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIO_NAMES)}")
    if a.router != "model-router" and a.workers != 1:
        p.error("--router minimal/both needs --workers 1 (the probe is one process)")
    if a.router != "model-router" and a.pin_cpu:
        p.error("--pin-cpu pins only the router, so it would not compare with the probe")
    duration = a.duration if a.duration is not None else (5.0 if a.quick else 20.0)
    known = {s.name for s in ALL_SETUPS}
    chosen = [s.strip() for s in a.setups.split(",") if s.strip()]
    if a.validation:
        chosen += [s.name for s in VALIDATION_SETUPS if s.name not in chosen]
    bad = [s for s in chosen if s not in known]
    if bad:
        p.error(f"unknown setups {bad}; known: {sorted(known)}")
    if a.profile is not None:
        if not (ROOT / ".venv" / "bin" / "py-spy").exists():
            p.error("--profile needs py-spy: .venv/bin/pip install py-spy")
        a.profile.mkdir(parents=True, exist_ok=True)
    return Options(
        duration_s=duration,
        warmup_iters=300 if a.quick else 1000,
        vus=a.vus,
        rate=a.rate,
        workers=a.workers,
        envoy_concurrency=a.envoy_concurrency,
        backends=max(1, a.backends),
        baselines=a.baselines,
        setups=chosen,
        profile_dir=a.profile.resolve() if a.profile else None,
        profile_native=a.native,
        keep=a.keep,
        json_path=a.json,
        router=a.router,
        scenarios=scenarios,
        quick=a.quick,
        pin_cpu=a.pin_cpu,
    )


async def amain(opts: Options, workdir: Path) -> dict[str, dict[str, Result]]:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    bodies = write_bodies(workdir)
    backends = PORTS.take(opts.backends)
    nginx = Nginx(workdir, backends)
    results: dict[str, dict[str, Result]] = {}
    try:
        await nginx.start()
        for setup in plan(opts):
            print(f"== {setup.name}: {setup.note}", flush=True)
            t0 = time.monotonic()
            try:
                runs = await run_setup(opts, setup, workdir, bodies, nginx, backends)
            except (RuntimeError, TimeoutError, OSError) as exc:
                # One broken setup must not hide the others' numbers.
                print(f"   FAILED: {exc}", flush=True)
                FAILED.append(setup.name)
                continue
            results[setup.name] = {r.mode: r for r in runs}
            print(f"   ({time.monotonic() - t0:.1f} s)", flush=True)
    finally:
        await nginx.stop()
    return results


def main_scenarios(opts: Options) -> int:
    """``--scenarios``: scheduling quality on simulators; JSON ``{"scenarios": ...}``."""
    workdir = Path(tempfile.mkdtemp(prefix="model-router-scenarios-"))
    started = time.monotonic()
    ok = False
    try:
        results = asyncio.run(run_scenarios(list(opts.scenarios), workdir, opts.quick))
        ok = True
    finally:
        REAPER.kill_all()
        if opts.keep or not ok:
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    lines = scheduling_report(results)
    if lines:
        print("\ntargets (ratios within this run):")
        print("\n".join(lines))
    if opts.json_path is not None:
        opts.json_path.parent.mkdir(parents=True, exist_ok=True)
        opts.json_path.write_text(json.dumps({"scenarios": results}, indent=2) + "\n")
        print(f"\nwrote {opts.json_path}")
    print(f"total {time.monotonic() - started:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.scenarios:
        return main_scenarios(opts)
    workdir = Path(tempfile.mkdtemp(prefix="model-router-bench-"))
    workdir.chmod(0o755)  # nginx workers run as nobody
    started = time.monotonic()
    print(
        f"bench: {opts.duration_s:g} s per run, fixed {opts.rate} req/s, max {opts.vus} VUs, "
        f"router workers {opts.workers}, envoy --concurrency {opts.envoy_concurrency}, "
        f"{opts.backends} nginx ports, {os.cpu_count()} cores; work dir {workdir}",
        flush=True,
    )
    busy = preflight_busy()
    if busy > 15:
        print(
            f"WARNING: the machine is already {busy:.0f}% busy before the benchmark "
            f"(load average {os.getloadavg()[0]:.1f}); results will be noisy",
            flush=True,
        )
    ok = False
    try:
        results = asyncio.run(amain(opts, workdir))
        ok = not FAILED
    except KeyboardInterrupt:
        print("\ninterrupted; everything stopped", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print("\nterminated; everything stopped", file=sys.stderr)
        return 143
    finally:
        REAPER.kill_all()
        if opts.keep or not ok:
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    planned = [s for s in plan(opts) if s not in BASELINES]
    add_deltas(results, planned)
    print()
    print(table(results))
    print(
        "\n+p50/+p99: minus direct in the same mode.  router/envoy/nginx/k6: CPU (utime+stime) "
        "per completed request.\nbusy%: whole machine; other%: machine CPU used by "
        "processes not started here (noise: should be ~0)."
    )
    print("\nrouter CPU by thread (us/req):")
    for name, modes in results.items():
        for mode, r in modes.items():
            th = r.extra.get("router_thread_cpu_us_per_req")
            if th:
                parts = ", ".join(f"{k} {v:.0f}" for k, v in th.items())
                print(f"  {name:<14} {mode:<5} {parts}")
    lines = targets(results)
    if lines:
        print("\ntargets:")
        print("\n".join(lines))
    lines = versus_minimal(results)
    if lines:
        print("\nrouter vs minimal probe (same machine, same run):")
        print("\n".join(lines))
    lines = gateway_versus_headers(results)
    if lines:
        print("\ngateway (API key + tenant quotas) vs headers only (same run):")
        print("\n".join(lines))
    lines = uds_versus_tcp(results)
    if lines:
        print("\next_proc over a Unix socket vs TCP loopback (same run):")
        print("\n".join(lines))
    if opts.profile_dir is not None:
        print("\nprofiles (py-spy, max-throughput runs):")
        for prof in sorted(opts.profile_dir.glob("*.speedscope.json")):
            print("\n".join(summarize_speedscope(prof)))
    if opts.json_path is not None:
        doc = json_doc(results, planned)
        opts.json_path.parent.mkdir(parents=True, exist_ok=True)
        opts.json_path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {opts.json_path}")
    print(f"total {time.monotonic() - started:.1f} s")
    if FAILED:
        print(f"FAILED setups: {', '.join(FAILED)} (logs in {workdir})", file=sys.stderr)
        return 1
    return 0
