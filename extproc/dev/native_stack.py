"""``model-router stack``: the topology of ``docker-compose.yml`` as local processes,
from the same files.

There is no container daemon on the project's machines, so the compose stack's files
are exercised here by the real programs: Consul loads ``deploy/consul/services.json``,
the router ``deploy/routes.yaml``, Envoy the bootstrap rendered from it, Prometheus
``deploy/prometheus/prometheus.yml`` with its rules and targets, and the model servers
run with the arguments ``docker-compose.yml`` gives them.

Only addresses change, because containers have a host name and fixed ports each while
here every process shares loopback on free ports: :class:`Addresses` maps each compose
``service:port`` to ``127.0.0.1:<port>``, and every copy is the original with those
replaced (Prometheus' config and rules are copied unchanged: its targets are in
file-discovery files). The router's ``envoy.router_host`` becomes ``localhost``, so
Envoy still resolves the router by name, as it resolves ``router`` in compose.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from extproc.control.loading import parse_config
from extproc.dev.backends import kserve_python
from extproc.dev.consul_agent import ConsulAgent, consul_binary
from extproc.dev.inference_sim import inference_sim_binary
from extproc.dev.lifecycle import StartStop
from extproc.ops.procs import PORTS, ManagedProcess, wait_http_ok
from extproc.ops.stack import Stack

SIMULATORS = ("sim-a", "sim-b")
LOOPBACK = "127.0.0.1"


def prometheus_binary(name: str = "prometheus") -> Path | None:
    """``$PROMETHEUS_BIN`` / ``$PROMTOOL_BIN``, else on PATH (Debian's ``prometheus``)."""
    env = os.environ.get(f"{name.upper()}_BIN")
    if env and os.access(env, os.X_OK):
        return Path(env)
    found = shutil.which(name)
    return Path(found) if found else None


def binaries() -> dict[str, Path | None]:
    """What the stack runs, each with where it comes from -> its path, None when missing."""
    return {
        "llm-d-inference-sim (scripts/install-inference-sim)": inference_sim_binary(),
        "KServe's virtualenv (scripts/install-kserve)": kserve_python(),
        "consul (scripts/install-consul)": consul_binary(),
        "prometheus (apt-get install -y prometheus)": prometheus_binary(),
    }


@dataclass
class Addresses:
    """Compose ``service:port`` -> the loopback address the native process listens on."""

    native: dict[str, str] = field(default_factory=dict)

    def add(self, service: str, port: int, native_port: int) -> None:
        self.native[f"{service}:{port}"] = f"{LOOPBACK}:{native_port}"

    def __call__(self, address: str) -> str:
        try:
            return self.native[address]
        except KeyError:
            known = ", ".join(sorted(self.native))
            raise ValueError(f"{address} is not a service the stack runs ({known})") from None

    def url(self, url: str) -> str:
        """``http://sim-a:8000/health`` -> ``http://127.0.0.1:<port>/health``."""
        scheme, _, rest = url.partition("://")
        address, slash, path = rest.partition("/")
        return f"{scheme}://{self(address)}{slash}{path}"

    def port(self, address: str) -> int:
        return int(self(address).rpartition(":")[2])


def with_port(args: list[str], flag: str, port: int) -> list[str]:
    """A compose ``command`` with ``--flag=<port>`` (or ``--flag <port>``) replaced."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg.startswith(f"{flag}="):
            out[i] = f"{flag}={port}"
        elif arg == flag and i + 1 < len(out):
            out[i + 1] = str(port)
    return out


def native_services(services: dict[str, Any], where: Addresses) -> dict[str, Any]:
    """``deploy/consul/services.json`` with its addresses and check URLs on loopback."""
    out: dict[str, Any] = json.loads(json.dumps(services))
    for svc in out["services"]:
        address = where(f"{svc['address']}:{svc['port']}")
        svc["address"], port = address.rsplit(":", 1)
        svc["port"] = int(port)
        if "http" in svc.get("check", {}):
            svc["check"]["http"] = where.url(svc["check"]["http"])
    return out


def native_targets(groups: list[dict[str, Any]], where: Addresses) -> list[dict[str, Any]]:
    """A Prometheus file-discovery file with its targets on loopback (labels unchanged)."""
    return [{**g, "targets": [where(t) for t in g["targets"]]} for g in groups]


def native_routes(routes: dict[str, Any], grpc: int, metrics: int, envoy: list[int]) -> str:
    """``deploy/routes.yaml`` listening on loopback ports; Envoy finds the router by name."""
    out = json.loads(json.dumps(routes))
    out["listener"].update(host=LOOPBACK, port=grpc, metrics_port=metrics)
    listen, admin, stats = envoy
    out["envoy"].update(
        listen_host=LOOPBACK,
        listen_port=listen,
        admin_port=admin,
        stats_port=stats,
        router_host="localhost",
    )
    return yaml.safe_dump(out, sort_keys=False)


class NativeStack(StartStop):
    """Consul, two llm-d-inference-sim replicas, KServe's ModelServer, the router, Envoy and
    Prometheus on loopback, configured from ``root``'s compose files; logs and the native
    copies of the files in ``workdir``."""

    def __init__(self, root: Path, workdir: Path, *, log_level: str = "info") -> None:
        self.root = root
        self.workdir = workdir
        self.log_level = log_level
        self.where = Addresses()
        self.procs: list[ManagedProcess] = []
        self.consul: ConsulAgent | None = None
        self.stack: Stack | None = None
        self.prometheus_url = ""
        self.loaded: list[Path] = []
        """The files of ``root`` this stack's programs were started from."""

    def __repr__(self) -> str:
        return (
            f"NativeStack(root={str(self.root)!r}, {self.where.native}, stack={self.stack!r}, "
            f"procs={self.procs!r})"
        )

    def _read(self, relative: str) -> str:
        path = self.root / relative
        self.loaded.append(path)
        return path.read_text()

    @property
    def compose(self) -> dict[str, Any]:
        data = yaml.safe_load(self._read("docker-compose.yml"))
        if not isinstance(data, dict):
            raise ValueError(f"{self.root / 'docker-compose.yml'} is not a YAML mapping")
        return data

    @property
    def envoy_url(self) -> str:
        assert self.stack is not None
        return self.stack.url

    def _binaries(self) -> tuple[Path, Path, Path, Path]:
        found = binaries()
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise FileNotFoundError(f"model-router stack needs {', '.join(missing)}")
        sim, kserve, consul, prometheus = found.values()
        assert sim and kserve and consul and prometheus
        return sim, kserve, consul, prometheus

    def _allocate(self) -> dict[str, list[int]]:
        ports = {
            "sims": PORTS.take(len(SIMULATORS)),
            "kserve": PORTS.take(1),
            "grpc": PORTS.take(2, consecutive=True),
            "metrics": PORTS.take(2, consecutive=True),
            "envoy": PORTS.take(3),
            "prometheus": PORTS.take(1),
        }
        for name, port in zip(SIMULATORS, ports["sims"], strict=True):
            self.where.add(name, 8000, port)
        self.where.add("kserve", 8080, ports["kserve"][0])
        for i in range(2):
            self.where.add("router", 50051 + i, ports["grpc"][i])
            self.where.add("router", 9464 + i, ports["metrics"][i])
        self.where.add("envoy", 10000, ports["envoy"][0])
        self.where.add("envoy", 9902, ports["envoy"][2])
        self.where.add("prometheus", 9090, ports["prometheus"][0])
        return ports

    async def _run(self, name: str, argv: list[str], health: str) -> None:
        proc = ManagedProcess(name, argv, log=self.workdir / f"{name}.log")
        self.procs.append(proc)
        await proc.start()
        await wait_http_ok(health, timeout_s=120.0, proc=proc)

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        sim, kserve, consul, prometheus = self._binaries()
        ports = self._allocate()
        compose = self.compose["services"]
        try:
            for name in SIMULATORS:
                port = self.where.port(f"{name}:8000")
                argv = [str(sim), *with_port(compose[name]["command"], "--port", port)]
                await self._run(name, argv, f"http://{LOOPBACK}:{port}/health")
            port = self.where.port("kserve:8080")
            args = with_port(compose["kserve"]["command"], "--http-port", port)
            args = [f"--host={LOOPBACK}" if a.startswith("--host=") else a for a in args]
            script = Path(__file__).with_name("kserve_echo.py")
            await self._run(
                "kserve",
                [str(kserve), str(script), *args],
                f"http://{LOOPBACK}:{port}/v2/health/ready",
            )
            await self._start_consul(consul)
            await self._start_router_and_envoy(ports)
            await self._start_prometheus(prometheus)
        except BaseException:
            await self.stop()
            raise

    async def _start_consul(self, binary: Path) -> None:
        services = json.loads(self._read("deploy/consul/services.json"))
        path = self.workdir / "consul" / "services.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(native_services(services, self.where), indent=2))
        self.consul = ConsulAgent(binary, self.workdir / "consul", config_files=(path,))
        await self.consul.start()
        ids = [svc["id"] for svc in services["services"]]
        await self.consul.wait_checks_passing(ids, timeout_s=60.0)

    async def _start_router_and_envoy(self, ports: dict[str, list[int]]) -> None:
        assert self.consul is not None
        routes = yaml.safe_load(self._read("deploy/routes.yaml"))
        text = native_routes(routes, ports["grpc"][0], ports["metrics"][0], ports["envoy"])
        path = self.workdir / "routes.yaml"
        path.write_text(text)
        self.stack = Stack(
            parse_config(text, str(path)),
            path,
            workdir=self.workdir,
            log_level=self.log_level,
            router_env={"CONSUL_HTTP_ADDR": self.consul.address},
        )
        await self.stack.start()

    async def _start_prometheus(self, binary: Path) -> None:
        source = self.root / "deploy/prometheus"
        here = self.workdir / "prometheus"
        shutil.copytree(source, here, ignore=shutil.ignore_patterns("targets"))
        self.loaded.append(source)
        (here / "targets").mkdir()
        for targets in sorted((source / "targets").glob("*.yml")):
            groups = yaml.safe_load(targets.read_text())
            native = native_targets(groups, self.where)
            (here / "targets" / targets.name).write_text(yaml.safe_dump(native, sort_keys=False))
        listen = self.where("prometheus:9090")
        self.prometheus_url = f"http://{listen}"
        argv = [
            str(binary),
            f"--config.file={here / 'prometheus.yml'}",
            f"--storage.tsdb.path={here / 'data'}",
            f"--web.listen-address={listen}",
            "--log.level=warn",
        ]
        await self._run("prometheus", argv, f"{self.prometheus_url}/-/ready")

    async def stop(self) -> None:
        """Stop everything started, in reverse order, each even if another's stop fails."""
        async with contextlib.AsyncExitStack() as stops:  # runs them last to first
            for proc in self.procs:  # the model servers, then Prometheus
                stops.push_async_callback(proc.stop, 10)
            if self.consul is not None:
                stops.push_async_callback(self.consul.stop)
            if self.stack is not None:  # Envoy, then the router: first to stop
                stops.push_async_callback(self.stack.stop)


async def run_native_stack(root: Path, log_level: str) -> int:
    """``model-router stack``: start, print where everything is, run until SIGINT/SIGTERM."""
    import tempfile

    from extproc.ops.stack import StartupError, stop_on_signals

    workdir = Path(tempfile.mkdtemp(prefix="model-router-stack-"))
    native = NativeStack(root, workdir, log_level=log_level)
    stop = stop_on_signals()
    try:
        await native.start()
    except (StartupError, FileNotFoundError, RuntimeError, TimeoutError, ValueError) as exc:
        print(f"model-router stack: {exc}; logs in {workdir}", flush=True)
        return 1
    assert native.stack is not None and native.consul is not None
    print(f"envoy       {native.envoy_url}  (send requests here)")
    print(f"prometheus  {native.prometheus_url}")
    print(f"consul      {native.consul.url}")
    for address, here in sorted(native.where.native.items()):
        print(f"  {address:<18} -> {here}")
    print(f"files, logs {workdir}")
    print("Ctrl-C stops everything.", flush=True)
    await stop.wait()
    await native.stop()
    print("stopped", flush=True)
    return 0
