"""Router overhead benchmark: Envoy direct vs Envoy + router, on the same nginx backends.

One run measures, with k6 on loopback:

* ``direct``     Envoy straight to nginx (the shipped bootstrap minus ext_proc).
* ``headers``    Envoy + router, KServe ``/v2/models/<m>/infer``: decided on headers
                 (``mode_override`` stops Envoy sending the body to the router).
* ``body``       Envoy + router, OpenAI ``/v1/chat/completions`` with a 4 KiB body.
* ``body_256k``  the same with a 256 KiB body.

each at a fixed arrival rate (``fixed``) and at saturation (``max``). See
``loadtest/README.md``. Usage: ``scripts/bench [--quick] [--json FILE] ...``.

``--router minimal`` runs the routed setups with ``loadtest/minimal_extproc.py`` (grpc.aio
+ upb + uvloop, round robin only) in place of the router; ``--router both`` runs each
routed setup with both, the probe's rows suffixed ``_min`` (e.g. ``headers_min``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from string import Template
from typing import Any

import yaml

from extproc.control.loading import parse_config
from extproc.ops.envoy_config import EnvoyPorts, render_bootstrap
from extproc.ops.procs import (
    PORTS,
    ManagedProcess,
    envoy_argv,
    wait_grpc_serving,
    wait_http_ok,
)
from extproc.ops.stack import Stack

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
K6_SCRIPT = HERE / "k6" / "bench.js"
MINIMAL_SCRIPT = HERE / "minimal_extproc.py"
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
ROUTERS = ("model-router", "minimal", "both")
MINIMAL_SUFFIX = "_min"
NGINX_TEMPLATE = HERE / "nginx.conf.tmpl"
CLK_TCK = os.sysconf("SC_CLK_TCK")

CHAT_MODEL = "bench-chat"
KSERVE_MODEL = "bench-kserve"
CHAT_PATH = "/v1/chat/completions"
KSERVE_PATH = f"/v2/models/{KSERVE_MODEL}/infer"
MODES = ("fixed", "max")

# Team design targets (printed next to the measurements; never used to alter them).
TARGET_CPU_HEADERS_MAX_US = 200.0
TARGET_CPU_HEADERS_FIXED_US = 400.0
TARGET_CPU_BODY_US = 300.0
TARGET_ADDED_P50_MS = 0.6
TARGET_ADDED_P99_MS = 2.5
TARGET_THROUGHPUT_RATIO = 0.33


@dataclass(frozen=True, slots=True)
class Setup:
    name: str
    routed: bool
    path: str
    body: str
    """Key into the bodies written by :func:`write_bodies`."""
    baseline: str
    """The direct setup with the same path and body (added latency against it, if run)."""
    note: str
    minimal: bool = False
    """Run with the minimal probe (``loadtest/minimal_extproc.py``) instead of the router."""

    def as_minimal(self) -> Setup:
        return replace(
            self,
            name=self.name + MINIMAL_SUFFIX,
            note=self.note + " (minimal probe)",
            minimal=True,
        )


SETUPS = (
    Setup("direct", False, CHAT_PATH, "chat_4k", "direct", "Envoy -> nginx, 4 KiB chat body"),
    Setup(
        "headers", True, KSERVE_PATH, "kserve_small", "direct_small", "KServe path, headers only"
    ),
    Setup("body", True, CHAT_PATH, "chat_4k", "direct", "OpenAI chat, 4 KiB body to router"),
    Setup("body_256k", True, CHAT_PATH, "chat_256k", "direct_256k", "OpenAI chat, 256 KiB body"),
)
VALIDATION_SETUPS = (
    Setup("valid_1k", True, CHAT_PATH, "valid_1k", "direct",
          "OpenAI chat 1 KiB: JSON Schema + limits + 2 content rules"),
    Setup("valid_4k", True, CHAT_PATH, "valid_4k", "direct",
          "OpenAI chat 4 KiB: JSON Schema + limits + 2 content rules"),
    Setup("valid_64k", True, CHAT_PATH, "valid_64k", "direct",
          "OpenAI chat 64 KiB: JSON Schema + limits + 2 content rules"),
)  # fmt: skip
ALL_SETUPS = SETUPS + VALIDATION_SETUPS
VALID_MODEL = "bench-valid"
VALID_SPEC = {
    "openai": {
        "json_schema": {
            "type": "object",
            "properties": {
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "n": {"type": "integer", "minimum": 1, "maximum": 4},
                "stream": {"type": "boolean"},
                "stop": {
                    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
                },
            },
        },
        "max_messages": 16,
        "max_prompt_chars": 100000,
        "max_tokens": 4096,
        "forbidden_params": ["logit_bias"],
    }
}
VALID_RULES = [  # both evaluated in full, neither matches: the worst case for rule cost
    {"name": "tools-to-large", "when": {"model": VALID_MODEL, "any": [{"has": ["tools"]},
     {"max_tokens": {"gt": 1024}}]}, "route": {"model": CHAT_MODEL}},
    {"name": "medical", "when": {"model": VALID_MODEL, "last_user_message":
     {"keywords": ["patient", "diagnos", "symptom"]}},
     "route": {"capabilities": "domain=medical"}},
]  # fmt: skip
BASELINES = (
    Setup("direct_small", False, KSERVE_PATH, "kserve_small", "direct_small", "direct, small"),
    Setup("direct_256k", False, CHAT_PATH, "chat_256k", "direct_256k", "direct, 256 KiB"),
)


# ---------------------------------------------------------------------------------------
# Process bookkeeping: everything we start is in its own process group, and is killed
# at exit whatever happened (Ctrl-C, exceptions, a hung child).


class Reaper:
    """Process groups to SIGKILL at exit if they are still alive."""

    def __init__(self) -> None:
        self.pgids: set[int] = set()

    def add(self, pgid: int) -> None:
        self.pgids.add(pgid)

    def discard(self, pgid: int) -> None:
        self.pgids.discard(pgid)

    def kill_all(self) -> None:
        for pgid in sorted(self.pgids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self.pgids.clear()


REAPER = Reaper()
FAILED: list[str] = []


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/PID/stat`` (after the ``(comm)``), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """``root`` and every live descendant (router supervisor -> workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime (fields 14 and 15 of /proc/PID/stat) of ``pids``, in seconds."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def thread_cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds per thread kind of ``pids``: main, grpc poller, grpc event_engine, ..."""
    out: dict[str, float] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
                raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rfind(")") + 2 :].split()
            if tid == str(pid):
                kind = "main (asyncio loop)"
            elif comm.startswith("python"):
                kind = "grpc aio poller thread"
            else:
                kind = f"grpc {comm}" if comm.startswith(("event_engine", "grpc")) else comm
            out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = float(sum(parts[:8]))
    return total - idle, total


def preflight_busy(seconds: float = 1.0) -> float:
    """Whole-machine busy % over ``seconds`` before we start anything."""
    b0, t0 = machine_busy()
    time.sleep(seconds)
    b1, t1 = machine_busy()
    return 100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------------------------
# Inputs: bodies, nginx, the routing file, the direct Envoy bootstrap


def _chat_body(size: int, model: str = CHAT_MODEL) -> bytes:
    """A chat completion request of exactly ``size`` bytes."""
    words = ("the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while")
    system = "You are a helpful assistant. Answer briefly."

    def build(filler: str) -> bytes:
        doc = {
            "model": model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": filler},
            ],
            "max_tokens": 16,
            "temperature": 0,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    empty = len(build(""))
    text = " ".join(words[i % len(words)] for i in range(size // 4))[: size - empty]
    body = build(text)
    assert len(body) == size, (len(body), size)
    return body


def write_bodies(workdir: Path) -> dict[str, Path]:
    kserve = {
        "id": "bench",
        "inputs": [{"name": "input0", "shape": [1, 8], "datatype": "FP32", "data": list(range(8))}],
    }
    bodies = {
        "kserve_small": json.dumps(kserve, separators=(",", ":")).encode(),
        "chat_4k": _chat_body(4 * 1024),
        "chat_256k": _chat_body(256 * 1024),
        "valid_1k": _chat_body(1024, VALID_MODEL),
        "valid_4k": _chat_body(4 * 1024, VALID_MODEL),
        "valid_64k": _chat_body(64 * 1024, VALID_MODEL),
    }
    out = {}
    for name, data in bodies.items():
        path = workdir / f"body-{name}.json"
        path.write_bytes(data)
        out[name] = path
    return out


def routes_yaml(
    grpc_port: int,
    workers: int,
    listen: int,
    admin: int,
    backends: list[int],
    *,
    validation: bool = False,
    pin_cpu: bool = False,
) -> str:
    """The routing file: both models served by every nginx port (one deployment each)."""
    deployments = []
    models = (CHAT_MODEL, KSERVE_MODEL, VALID_MODEL) if validation else (CHAT_MODEL, KSERVE_MODEL)
    for model in models:
        for i, port in enumerate(backends):
            deployments.append(
                {
                    "name": f"{model}-{i}",
                    "model": model,
                    "version": "1",
                    "endpoints": [f"127.0.0.1:{port}"],
                }
            )
    model_docs: dict[str, Any] = {
        CHAT_MODEL: {"protocol": "openai", "versions": ["1"]},
        KSERVE_MODEL: {"protocol": "kserve_v2", "versions": ["1"]},
    }
    doc: dict[str, Any] = {
        "listener": {
            "host": "127.0.0.1",
            "port": grpc_port,
            "metrics_port": 0,
            "workers": workers,
            "grace_period_s": 1,
            "pin_cpu": pin_cpu,
        },
        "envoy": {"listen_port": listen, "admin_port": admin},
        "failure_mode": "closed",
        "models": model_docs,
        "deployments": deployments,
    }
    if validation:  # only then: the other setups measure the router without specs or rules
        model_docs[VALID_MODEL] = {"protocol": "openai", "versions": ["1"], "spec": VALID_SPEC}
        doc["rules"] = VALID_RULES
    return "# generated by loadtest/bench.py\n" + yaml.safe_dump(doc, sort_keys=False)


def direct_bootstrap(rendered: str, backends: list[int]) -> str:
    """The shipped bootstrap minus ext_proc: one route to a static cluster of ``backends``.

    Listener, HCM (early header mutation, access log, local replies), the buffer and
    header_mutation filters and the route timeouts stay exactly as rendered.
    """
    doc = yaml.safe_load(rendered)
    static = doc["static_resources"]
    hcm = static["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [
        f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.ext_proc"
    ]
    vhost = hcm["route_config"]["virtual_hosts"][0]
    picked = next(r for r in vhost["routes"] if r.get("name") == "picked")
    vhost["routes"] = [
        {
            "name": "direct",
            "match": {"prefix": "/"},
            "route": {
                "cluster": "bench_backends",
                "timeout": picked["route"]["timeout"],
                "idle_timeout": picked["route"]["idle_timeout"],
            },
        }
    ]
    picked_cluster = next(c for c in static["clusters"] if c["name"] == "picked_endpoint")
    static["clusters"] = [
        {
            "name": "bench_backends",
            "type": "STATIC",
            "connect_timeout": picked_cluster["connect_timeout"],
            "lb_policy": "ROUND_ROBIN",
            "circuit_breakers": picked_cluster["circuit_breakers"],
            "load_assignment": {
                "cluster_name": "bench_backends",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {"address": "127.0.0.1", "port_value": p}
                                    }
                                }
                            }
                            for p in backends
                        ]
                    }
                ],
            },
        }
    ]
    return "# generated by loadtest/bench.py: rendered bootstrap minus ext_proc\n" + (
        yaml.safe_dump(doc, sort_keys=False)
    )


# ---------------------------------------------------------------------------------------
# Running things


async def start_managed(proc: ManagedProcess) -> None:
    await proc.start()
    REAPER.add(proc.pid)


async def stop_managed(proc: ManagedProcess | None, grace_s: float) -> None:
    if proc is None or proc.proc is None:
        return
    try:
        await proc.stop(grace_s)
    finally:
        # Whatever is left of its process group (router workers) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        REAPER.discard(proc.pid)


class Nginx:
    def __init__(self, workdir: Path, ports: list[int]) -> None:
        self.workdir = workdir
        self.ports = ports
        self.conf = workdir / "nginx.conf"
        self.proc: ManagedProcess | None = None

    async def start(self) -> None:
        listens = "".join(f"        listen 127.0.0.1:{p};\n" for p in self.ports)
        text = Template(NGINX_TEMPLATE.read_text()).substitute(
            PREFIX=str(self.workdir), LISTENS=listens
        )
        self.conf.write_text(text)
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        argv = [binary, "-p", str(self.workdir), "-c", str(self.conf), "-e", "stderr"]
        self.proc = ManagedProcess("nginx", argv, log=self.workdir / "nginx.log")
        await start_managed(self.proc)
        for port in self.ports:
            await wait_http_ok(f"http://127.0.0.1:{port}/", timeout_s=15, proc=self.proc)

    @property
    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc and self.proc.running else []

    async def stop(self) -> None:
        await stop_managed(self.proc, 5)


class DirectEnvoy:
    """Envoy from :func:`direct_bootstrap`, with the same flags as :class:`Stack`."""

    def __init__(self, workdir: Path, bootstrap: str, admin_port: int, concurrency: int) -> None:
        self.workdir = workdir
        self.bootstrap = workdir / "envoy-direct.yaml"
        self.bootstrap.write_text(bootstrap)
        self.admin_port = admin_port
        self.concurrency = concurrency
        self.envoy: ManagedProcess | None = None

    async def start(self) -> None:
        argv = envoy_argv(self.bootstrap, log_level="warning", concurrency=self.concurrency)
        argv += ["--file-flush-interval-msec", "250"]
        self.envoy = ManagedProcess("envoy", argv, log=self.workdir / "envoy.log")
        await start_managed(self.envoy)
        await wait_http_ok(f"http://127.0.0.1:{self.admin_port}/ready", proc=self.envoy)

    async def stop(self) -> None:
        await stop_managed(self.envoy, 5)


class MinimalStack(Stack):
    """:class:`Stack` with ``loadtest/minimal_extproc.py`` in place of ``extproc serve``.

    Same routing file, same rendered Envoy bootstrap (pointing at the probe's port),
    same readiness wait (gRPC health, the service name Envoy's health check uses).
    """

    def __init__(self, *args: Any, backends: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.endpoints = ",".join(f"127.0.0.1:{p}" for p in backends)

    async def start_router(self) -> None:
        (port,) = self.ports.ext_proc_ports  # one probe process: --workers 1 only
        argv = [sys.executable, str(MINIMAL_SCRIPT), "--port", str(port)]
        argv += ["--endpoints", self.endpoints]
        self.router = ManagedProcess("router", argv, log=self.workdir / "router.log")
        await self.router.start()
        host = self.config.listener.host
        await wait_grpc_serving(f"{host}:{port}", EXT_PROC_SERVICE, proc=self.router)


@dataclass(slots=True)
class Options:
    duration_s: float
    warmup_iters: int
    vus: int
    rate: int
    workers: int
    envoy_concurrency: int
    backends: int
    baselines: bool
    setups: list[str]
    profile_dir: Path | None
    profile_native: bool
    keep: bool
    json_path: Path | None
    router: str = "model-router"
    pin_cpu: bool = False


@dataclass(slots=True)
class Result:
    setup: str
    mode: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    requests: int = 0
    router_cpu_us_per_req: float = 0.0
    envoy_cpu_us_per_req: float = 0.0
    nginx_cpu_us_per_req: float = 0.0
    k6_cpu_us_per_req: float = 0.0
    machine_busy_pct: float = 0.0
    other_busy_pct: float = 0.0
    """Machine CPU used by processes that are not ours (noise from other work)."""
    avg_ms: float = 0.0
    p90_ms: float = 0.0
    max_ms: float = 0.0
    dropped: int = 0
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "errors": self.errors,
            "router_cpu_us_per_req": round(self.router_cpu_us_per_req, 1),
            "envoy_cpu_us_per_req": round(self.envoy_cpu_us_per_req, 1),
            "nginx_cpu_us_per_req": round(self.nginx_cpu_us_per_req, 1),
            "k6_cpu_us_per_req": round(self.k6_cpu_us_per_req, 1),
            "machine_busy_pct": round(self.machine_busy_pct, 1),
            "other_busy_pct": round(self.other_busy_pct, 1),
            "requests": self.requests,
            "dropped_iterations": self.dropped,
            "avg_ms": round(self.avg_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "max_ms": round(self.max_ms, 3),
        }
        if self.added_p50_ms is not None and self.added_p99_ms is not None:
            out["added_p50_ms"] = round(self.added_p50_ms, 3)
            out["added_p99_ms"] = round(self.added_p99_ms, 3)
        out.update(self.extra)
        return out


def _fmt_duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


async def run_k6(
    opts: Options, url: str, body: Path, mode: str, out: Path, *, duration_s: float | None = None
) -> dict[str, Any]:
    """One k6 run; returns the handleSummary JSON."""
    summary = out.with_suffix(".summary.json")
    summary.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(
        TARGET_URL=url,
        BODY_FILE=str(body),
        MODE=mode,
        DURATION=_fmt_duration(duration_s or opts.duration_s),
        RATE=str(opts.rate),
        VUS=str(opts.vus),
        WARMUP_ITERS=str(opts.warmup_iters),
        SUMMARY_FILE=str(summary),
        K6_NO_USAGE_REPORT="true",
        K6_NO_COLOR="true",
    )
    argv = [str(ROOT / ".venv" / "bin" / "k6"), "run", "--quiet", "--no-usage-report"]
    argv += ["--no-thresholds", str(K6_SCRIPT)]
    with out.with_suffix(".k6.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=str(out.parent),
        )
        REAPER.add(proc.pid)
        await wait_or_kill(proc, (duration_s or opts.duration_s) + 45)
    if proc.returncode != 0 or not summary.exists():
        tail = out.with_suffix(".k6.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"k6 failed (exit {proc.returncode}):\n{tail}")
    data: dict[str, Any] = json.loads(summary.read_text())
    return data


async def wait_or_kill(proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    """Wait for ``proc``; past ``timeout_s`` (or on error) kill its process group. Reaped."""
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        REAPER.discard(proc.pid)


def _metric(summary: dict[str, Any], name: str, key: str, default: float = 0.0) -> float:
    values = summary.get("metrics", {}).get(name, {}).get("values", {})
    return float(values.get(key, default))


async def py_spy(opts: Options, pid: int, name: str, duration_s: float) -> asyncio.Task[None]:
    """Start ``py-spy record`` on the router tree; the task ends when py-spy does."""
    assert opts.profile_dir is not None
    exe = ROOT / ".venv" / "bin" / "py-spy"
    target = opts.profile_dir / f"{name}.speedscope.json"
    argv = [str(exe), "record", "-p", str(pid), "-d", str(max(1, int(duration_s)))]
    argv += ["-r", "200", "-f", "speedscope", "-o", str(target), "--subprocesses"]
    # --native unwinds C frames (grpc core, upb, uvloop) and needs to pause the process;
    # without it, sample without pausing so the router is barely perturbed.
    argv.append("--native" if opts.profile_native else "--nonblocking")
    log = (opts.profile_dir / f"{name}.py-spy.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    REAPER.add(proc.pid)

    async def wait() -> None:
        try:
            await wait_or_kill(proc, duration_s + 60)
        finally:
            log.close()

    return asyncio.create_task(wait(), name=f"py-spy-{name}")


async def measure(
    opts: Options,
    setup: Setup,
    mode: str,
    url: str,
    body: Path,
    workdir: Path,
    router_pid: int | None,
    envoy_pid: int,
    nginx: Nginx,
) -> Result:
    router_pids = descendants(router_pid) if router_pid else []
    nginx_pids = nginx.pids
    profile: asyncio.Task[None] | None = None
    if opts.profile_dir is not None and router_pid and mode == "max":
        # Skip the first second (k6 start-up); stop before the run ends.
        profile = await py_spy(opts, router_pid, setup.name, max(1.0, opts.duration_s - 2))
    r0, e0, n0, k0 = (
        cpu_seconds(router_pids),
        cpu_seconds([envoy_pid]),
        cpu_seconds(nginx_pids),
        children_cpu(),
    )
    th0 = thread_cpu(router_pids)
    b0, t0 = machine_busy()
    w0 = time.monotonic()
    try:
        summary = await run_k6(opts, url, body, mode, workdir / f"{setup.name}-{mode}")
    finally:
        if profile is not None:
            await profile
    b1, t1 = machine_busy()
    wall = time.monotonic() - w0
    router_cpu = cpu_seconds(router_pids) - r0
    envoy_cpu = cpu_seconds([envoy_pid]) - e0
    nginx_cpu = cpu_seconds(nginx_pids) - n0
    k6_cpu = children_cpu() - k0
    reqs = int(_metric(summary, "http_reqs", "count"))
    per = 1e6 / reqs if reqs else 0.0
    th1 = thread_cpu(router_pids)
    threads = {k: round((v - th0.get(k, 0.0)) * per, 1) for k, v in sorted(th1.items())}
    ours = router_cpu + envoy_cpu + nginx_cpu + k6_cpu
    other = (b1 - b0) / CLK_TCK - ours
    cores = os.cpu_count() or 1
    extra: dict[str, Any] = {}
    if router_pids:
        extra["router_thread_cpu_us_per_req"] = {k: v for k, v in threads.items() if v}
    return Result(
        extra=extra,
        setup=setup.name,
        mode=mode,
        rps=_metric(summary, "http_reqs", "rate"),
        p50_ms=_metric(summary, "http_req_duration", "p(50)"),
        p99_ms=_metric(summary, "http_req_duration", "p(99)"),
        avg_ms=_metric(summary, "http_req_duration", "avg"),
        p90_ms=_metric(summary, "http_req_duration", "p(90)"),
        max_ms=_metric(summary, "http_req_duration", "max"),
        errors=int(_metric(summary, "bench_errors", "count")),
        dropped=int(_metric(summary, "dropped_iterations", "count")),
        requests=reqs,
        router_cpu_us_per_req=router_cpu * per,
        envoy_cpu_us_per_req=envoy_cpu * per,
        nginx_cpu_us_per_req=nginx_cpu * per,
        k6_cpu_us_per_req=k6_cpu * per,
        machine_busy_pct=100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0,
        other_busy_pct=max(0.0, 100.0 * other / (wall * cores)) if wall > 0 else 0.0,
    )


async def run_setup(
    opts: Options,
    setup: Setup,
    workdir: Path,
    bodies: dict[str, Path],
    nginx: Nginx,
    backends: list[int],
) -> list[Result]:
    sdir = workdir / setup.name
    sdir.mkdir(parents=True, exist_ok=True)
    listen, admin = PORTS.take(2)
    grpc_ports = PORTS.take(opts.workers, consecutive=True)
    config_path = sdir / "routes.yaml"
    validation = any(s.name in opts.setups for s in VALIDATION_SETUPS)
    text = routes_yaml(
        grpc_ports[0],
        opts.workers,
        listen,
        admin,
        backends,
        validation=validation,
        pin_cpu=opts.pin_cpu,
    )
    config_path.write_text(text)
    config = parse_config(text, str(config_path))
    url = f"http://127.0.0.1:{listen}{setup.path}"
    body = bodies[setup.body]
    stack: Stack | None = None
    direct: DirectEnvoy | None = None
    results: list[Result] = []
    try:
        if setup.routed:
            kwargs: dict[str, Any] = {
                "workdir": sdir,
                "log_level": "warning",
                "envoy_concurrency": opts.envoy_concurrency,
                "ports": EnvoyPorts.from_config(config),
            }
            if setup.minimal:
                stack = MinimalStack(config, config_path, backends=backends, **kwargs)
            else:
                stack = Stack(config, config_path, **kwargs)
            await stack.start()
            assert stack.router is not None and stack.envoy is not None
            REAPER.add(stack.router.pid)
            REAPER.add(stack.envoy.pid)
            router_pid: int | None = stack.router.pid
            envoy_pid = stack.envoy.pid
        else:
            rendered = render_bootstrap(config, EnvoyPorts.from_config(config))
            direct = DirectEnvoy(
                sdir, direct_bootstrap(rendered, backends), admin, opts.envoy_concurrency
            )
            await direct.start()
            assert direct.envoy is not None
            router_pid = None
            envoy_pid = direct.envoy.pid
        # Warm-up: connections, Envoy's upstream pools, the router's code paths.
        warm = await run_k6(opts, url, body, "warmup", sdir / "warmup", duration_s=10)
        warm_errors = int(_metric(warm, "bench_errors", "count"))
        if warm_errors:
            log = sdir / "warmup.k6.log"
            raise RuntimeError(
                f"{setup.name}: {warm_errors} warm-up requests were not 200 (see {log}, "
                f"{sdir}/envoy.log, {sdir}/router.log)"
            )
        for mode in MODES:
            res = await measure(opts, setup, mode, url, body, sdir, router_pid, envoy_pid, nginx)
            results.append(res)
            print(
                f"  {setup.name:<14} {mode:<5} {res.rps:8.0f} req/s  p50 {res.p50_ms:6.2f} ms"
                f"  p99 {res.p99_ms:6.2f} ms  errors {res.errors}"
                f"  router {res.router_cpu_us_per_req:6.0f} us/req",
                flush=True,
            )
    finally:
        if stack is not None:
            pids = [p.pid for p in (stack.router, stack.envoy) if p is not None and p.proc]
            try:
                await stack.stop()
            finally:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
                    REAPER.discard(pid)
        if direct is not None:
            await direct.stop()
    return results


# ---------------------------------------------------------------------------------------
# Reporting


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
    out = []
    for label, value, limit, ok in rows:
        cmp = ">=" if "rps" in label else "<="
        out.append(
            f"  {label:<38} {_opt(value, '9.3f')}  target {cmp} {limit:<7g} "
            f"{'ok' if ok else 'MISS'}"
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


# ---------------------------------------------------------------------------------------
# Main


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
        default=",".join(s.name for s in SETUPS),
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
        pin_cpu=a.pin_cpu,
    )


def _plan(opts: Options) -> Iterator[Setup]:
    """The setups to run, in order; a probe run follows its router run (``both``)."""
    for s in ALL_SETUPS:
        if s.name not in opts.setups:
            continue
        if not (s.routed and s in SETUPS) or opts.router == "model-router":
            yield s
        elif opts.router == "minimal":
            yield s.as_minimal()
        else:
            yield s
            yield s.as_minimal()
    if opts.baselines:
        yield from BASELINES


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
        for setup in _plan(opts):
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


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
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
    planned = [s for s in _plan(opts) if s not in BASELINES]
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
    if opts.profile_dir is not None:
        print("\nprofiles (py-spy, max-throughput runs):")
        for prof in sorted(opts.profile_dir.glob("*.speedscope.json")):
            print("\n".join(summarize_speedscope(prof)))
    if opts.json_path is not None:
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
                name: {mode: r.as_json() for mode, r in modes.items()}
                for name, modes in base.items()
            }
        opts.json_path.parent.mkdir(parents=True, exist_ok=True)
        opts.json_path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {opts.json_path}")
    print(f"total {time.monotonic() - started:.1f} s")
    if FAILED:
        print(f"FAILED setups: {', '.join(FAILED)} (logs in {workdir})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
