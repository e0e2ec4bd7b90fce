"""Keeping the hot path's state current: the routing file, its reloads and the registry.

:class:`Reloader` owns the compiled routing file and the registry backend. Every
registry snapshot and every accepted reload becomes a new
:class:`~extproc.core.flow.RouterState`, handed to ``on_state`` (the server swaps it
in; open streams finish on the state they started with).

A reload is refused, and the previous file keeps serving, when the new file does not
load or compile, or when it changes a setting that is fixed at start-up
(:data:`STARTUP_ONLY`): the message names the setting and says to restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from extproc.control.compile import CompiledRouting, compile_routing, router_state
from extproc.control.errors import ConfigError
from extproc.control.loading import Document, locate, parse_document, read_text
from extproc.control.net import Resolver
from extproc.control.registry import Registry, RegistryInputs, make_registry
from extproc.control.registry.static import build_snapshot
from extproc.control.schema import Config
from extproc.core.flow import RouterState
from extproc.core.gateway.quota import QuotaBook
from extproc.core.signals import SignalBoard
from extproc.core.snapshot import Snapshot

log = logging.getLogger("extproc.control.reload")

STARTUP_ONLY = (
    "listener.host",
    "listener.port",
    "listener.metrics_port",
    "listener.workers",
    "listener.pin_cpu",
    "listener.unix_socket_dir",
    "limits.max_body_bytes",
    "limits.max_request_headers",
    "limits.large_body_bytes",
    "limits.max_concurrent_large_bodies",
    "failure_mode",
    "envoy",
    "auth.jwt",
    "quotas",
)
"""Settings read once at start-up: sockets, processes, gRPC message limits, and what
is rendered into Envoy's bootstrap. Changing one needs a restart."""

StateListener = Callable[[RouterState, CompiledRouting], None]
"""Told every new state, with the compiled routing file it came from."""


def _get(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part, None)
    return value


def startup_only_changes(old: Config, new: Config) -> list[str]:
    """The :data:`STARTUP_ONLY` settings ``new`` changes, each with old and new value."""
    out = []
    if (old.auth is None) != (new.auth is None):
        out.append("auth: turned on or off; Envoy's filters follow it at start-up, restart")
    for key in STARTUP_ONLY:
        before, after = _get(old, key), _get(new, key)
        if before != after:
            shown = "" if key in ("envoy", "auth.jwt", "quotas") else f" ({before!r} -> {after!r})"
            out.append(f"{key}: changed{shown}; it is fixed at start-up, restart to apply it")
    return out


Stamp = tuple[tuple[int, int] | None, ...]


def _stamp_of(path: Path) -> tuple[int, int] | None:
    """Modification time and size of ``path`` (``None`` when it is missing)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _file_stamp(*paths: Path) -> Stamp | None:
    """Modification times and sizes of ``paths`` (``None`` when the first is missing)."""
    stamps = tuple(_stamp_of(path) for path in paths)
    return None if stamps[0] is None else stamps


def _compile_document(doc: Document, text: str, source: str) -> CompiledRouting | None:
    """``doc`` compiled; its problems and the compile step's, with lines, in ``doc``."""
    try:
        return replace(compile_routing(doc.config, source), text=text)
    except ConfigError as exc:
        doc.problems.extend(p for p in locate(exc.problems, doc.root) if p not in doc.problems)
        return None


def compile_text(text: str, source: str) -> CompiledRouting:
    """Parse and compile routing-file ``text`` (``source``: its path, which ``spec_files``
    are relative to); :class:`ConfigError` lists every problem of every step, with lines."""
    doc = parse_document(text, source)
    compiled = _compile_document(doc, text, source)
    if doc.problems or compiled is None:
        raise ConfigError(source, doc.problems)
    return compiled


_DEPLOYMENT = re.compile(r"^deployments\[(\d+)\]")


async def check_routing_file(path: Path) -> CompiledRouting:
    """Everything ``check-config`` checks, in one run: :func:`load_routing`'s problems and
    the endpoints' hostnames, resolved as the static registry will (Consul's endpoints
    are resolved as they come); :class:`ConfigError` with every problem and its line."""
    text, source = read_text(path), str(path)
    doc = parse_document(text, source)
    compiled = _compile_document(doc, text, source)
    if doc.config.registry.type == "static":
        config = doc.config
        inputs = RegistryInputs(source, dict(config.models), config.deployments, frozenset())
        try:
            await build_snapshot(inputs, Resolver())
        except ConfigError as exc:
            index = doc.deployment_index  # back to the file's numbering
            found = [
                _DEPLOYMENT.sub(lambda m: f"deployments[{index[int(m[1])]}]", p)
                for p in exc.problems
            ]
            doc.problems.extend(locate(found, doc.root))
    if doc.problems or compiled is None:
        raise ConfigError(source, doc.problems)
    return compiled


def load_routing(path: Path) -> CompiledRouting:
    """Load and compile a routing file (blocking: reads files)."""
    return compile_text(read_text(path), str(path))


class Reloader:
    """The routing file, its registry and the state they compile to."""

    def __init__(
        self,
        compiled: CompiledRouting,
        *,
        path: Path | None,
        on_state: StateListener,
        on_reload: Callable[[str], None] = lambda result: None,
        on_accepted: Callable[[CompiledRouting], None] = lambda compiled: None,
        watch_interval_s: float = 1.0,
        signals: SignalBoard | None = None,
        quotas: QuotaBook | None = None,
    ) -> None:
        self.compiled = compiled
        self.signals = signals
        """The worker's live signals, shared by every state (None: an empty board each)."""
        self.quotas = quotas
        """The worker's tenant quota book, shared by every state (counts survive reloads)."""
        self.path = path
        self.watch_interval_s = watch_interval_s
        self._on_state = on_state
        self._on_reload = on_reload
        self._on_accepted = on_accepted
        self._registry: Registry | None = None
        self._lock = asyncio.Lock()
        self._stamp: Stamp | None = None
        self._watch: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return (
            f"Reloader(path={str(self.path) if self.path else None!r}, "
            f"registry={self._registry!r}, compiled={self.compiled!r})"
        )

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise RuntimeError("Reloader.start() has not run")
        return self._registry

    def _inputs(self, compiled: CompiledRouting) -> RegistryInputs:
        return RegistryInputs.of(compiled)

    def _new_registry(self, compiled: CompiledRouting, generation: int) -> Registry:
        registry = make_registry(
            compiled.config.registry, self._inputs(compiled), generation=generation
        )
        registry.add_listener(lambda snap: self._on_snapshot(registry, snap))
        return registry

    def _on_snapshot(self, registry: Registry, snapshot: Snapshot) -> None:
        if registry is self._registry:  # a registry being replaced publishes nothing
            self._on_state(self._state(self.compiled, snapshot), self.compiled)

    def prepare(self) -> RouterState:
        """Create the registry (not started yet) and return the first state: no snapshot,
        so requests get a 503 and health stays NOT_SERVING until the registry syncs."""
        self._registry = self._new_registry(self.compiled, 0)
        return self._state(self.compiled, None)

    def _state(self, compiled: CompiledRouting, snapshot: Snapshot | None) -> RouterState:
        return router_state(compiled, snapshot, self.signals, self.quotas)

    def _watched(self) -> tuple[Path, ...]:
        """The routing file and the files it names that a change reloads (keys file)."""
        assert self.path is not None
        gateway = self.compiled.gateway
        return (self.path, *(gateway.watched if gateway is not None else ()))

    async def start(self) -> None:
        """Start the registry (it publishes its snapshots) and the file watch."""
        if self._registry is None:
            self.prepare()
        await self.registry.start()
        if self.path is not None:
            self._stamp = _file_stamp(*self._watched())
            edited = await asyncio.to_thread(self._edited_since_loaded)
            if edited:
                self._stamp = None  # so the watcher's first look loads the edit
            self._watch = asyncio.create_task(self._watch_file(), name="watch-routing-file")

    def _edited_since_loaded(self) -> bool:
        """Whether the routing file changed between its first load and :meth:`start`."""
        assert self.path is not None
        if not self.compiled.text or self.compiled.last_good:
            return False  # nothing to compare, or the file is the broken one already refused
        try:
            return read_text(self.path) != self.compiled.text
        except ConfigError:
            return True  # unreadable: the watcher's reload says why (a missing one: once back)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self._registry is not None:
            await self._registry.stop()

    def _restamp(self, watched: tuple[Path, ...], before: Stamp | None) -> Stamp | None:
        """The stamp the watcher compares against once a reload accepted a file.

        A file that was already watched keeps the stamp taken *before* the reload read it:
        an edit made while the reload ran then differs from it and the watcher loads that
        edit (a stamp taken after the read would record the edit as loaded and lose it).
        A file the new routing file names for the first time is stamped now."""
        known = dict(zip(watched, before or (), strict=False))
        stamps = [known[p] if p in known else _stamp_of(p) for p in self._watched()]
        return None if stamps[0] is None else tuple(stamps)

    async def reload(self, *, only_if_changed: bool = False) -> bool:
        """Load the routing file again; keep the current one if the new one is refused.
        ``only_if_changed`` (the file watch): skip it if a reload (SIGHUP) already read
        the file as it is now, so one edit is loaded, and counted, once."""
        if self.path is None:
            return False
        async with self._lock:
            watched = self._watched()
            stamp = _file_stamp(*watched)  # before the read: see _restamp
            if only_if_changed and stamp == self._stamp:
                return False
            self._stamp = stamp  # the watcher must not load it twice
            old = self.registry
            snap = old.snapshot
            generation = snap.generation + 1 if snap is not None else 0
            try:
                compiled = await asyncio.to_thread(load_routing, self.path)
                refused = startup_only_changes(self.compiled.config, compiled.config)
                if refused:
                    raise ConfigError(str(self.path), refused)
                if old.reusable_for(compiled.config.registry):
                    registry = old
                    self.compiled = compiled
                    await old.reconfigure(self._inputs(compiled))
                else:
                    registry = self._new_registry(compiled, generation)
                    await registry.start()
            except ConfigError as exc:
                self._on_reload("error")
                log.error(
                    "reload rejected, keeping the previous routing file: %s",
                    "; ".join(exc.problems),
                    extra={"source": exc.source},
                )
                return False
            self.compiled = compiled
            self._registry = registry
            self._stamp = self._restamp(watched, stamp)
            self._on_state(self._state(compiled, registry.snapshot), compiled)
            self._on_reload("success")
            self._on_accepted(compiled)
            log.info("routing file reloaded", extra={"generation": generation})
            if registry is not old:
                await old.stop()
            return True

    async def _watch_file(self) -> None:
        """Reload when the file changes and then holds still (editors write in steps)."""
        assert self.path is not None
        settle = min(0.1, self.watch_interval_s)
        while True:
            await asyncio.sleep(self.watch_interval_s)
            stamp = _file_stamp(*self._watched())
            if stamp is None or stamp == self._stamp:
                continue
            while True:  # wait until two looks in a row agree
                await asyncio.sleep(settle)
                again = _file_stamp(*self._watched())
                if again == stamp:
                    break
                stamp = again
            await self.reload(only_if_changed=True)
