"""The scheduling framework: filters narrow the candidates, weighted scorers rate them, a
picker orders them (primary first, then fallbacks).

Shaped after the Gateway API Inference Extension's scheduling framework: plugins are
registered by name (:mod:`extproc.core.scheduling.plugins`) with typed parameters (a
frozen dataclass per plugin, validated by the compile step), and combined into named
profiles in the routing file (:class:`~extproc.core.scheduling.profile.Profile`).

Adding a plugin is one small module with a subclass of :class:`Filter`,
:class:`Scorer` or :class:`Picker`, plus its entry in ``plugins.PLUGINS``.
"""

from __future__ import annotations

import abc
import math
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from extproc.core import usage
from extproc.core.admission import PriorityClass
from extproc.core.capabilities import Requirements
from extproc.core.request import InferenceRequest
from extproc.core.signals import SignalBoard
from extproc.core.snapshot import Deployment, Endpoint, ModelEntry


@dataclass(frozen=True, slots=True)
class Candidate:
    """One endpoint that might serve the request, with the deployment it belongs to."""

    endpoint: Endpoint
    deployment: Deployment
    address: str = field(init=False, repr=False, compare=False)
    """``endpoint.address``, copied: scorers read it for every candidate."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", self.endpoint.address)

    def __repr__(self) -> str:
        return f"Candidate({self.endpoint.address}, deployment={self.deployment.name!r})"


@dataclass(slots=True)
class SchedulingRequest:
    """What plugins may read about the request being scheduled (one per request; plugins
    must not change it; not frozen because a frozen dataclass costs ~1 us more to build
    on the hot path)."""

    request: InferenceRequest
    model: ModelEntry
    version: str | None
    """The requested version (``None``: any)."""
    capabilities: Requirements
    subset: frozenset[str] | None
    """The proxy's candidate subset (endpoint picker protocol), if it sent one."""
    signals: SignalBoard
    """Live load, latency, ejections and in-flight counts (read, never waited on)."""
    now: float
    """``time.monotonic()`` when scheduling started (staleness, ejection expiry)."""
    scratch: dict[str, Any] = field(default_factory=dict)
    """Per-request memo plugins share (e.g. the prompt's block hashes)."""
    priority: PriorityClass | None = None
    """The request's priority class (admission; ``None``: the default class)."""
    budget_ms: float | None = None
    """Time-to-first-token budget (header, or the model's objective)."""
    budget_at_risk: bool = False
    """Set by admission: no endpoint was predicted to meet the budget."""
    default_completion_tokens: int = 256
    """Completion tokens assumed when the request sets no limit (cost estimates)."""

    def tokens(self) -> tuple[int, int]:
        """Estimated (prompt, completion) tokens (:mod:`extproc.core.usage`), memoised."""
        memo: tuple[int, int] | None = self.scratch.get("tokens")
        if memo is None:
            body = self.request.body
            memo = self.scratch["tokens"] = (
                usage.prompt_tokens(body),
                usage.completion_tokens(body, self.default_completion_tokens),
            )
        return memo

    def cost(self, deployment: Deployment) -> float | None:
        """The request's estimated cost on ``deployment`` (``None``: no cost declared)."""
        cost = deployment.cost
        if cost is None:
            return None
        return cost.estimate(*self.tokens())


@dataclass(frozen=True, slots=True)
class NoParams:
    """The plugin takes no parameters."""


@dataclass(frozen=True, slots=True)
class SeedParams:
    """For plugins that draw at random."""

    seed: int | None = None
    """Seed the generator (reproducible picks, for tests and benchmarks)."""


class Plugin(abc.ABC):
    """Base of every scheduling plugin: a registered ``name`` and typed ``params``."""

    kind: ClassVar[str]
    name: ClassVar[str]
    Params: ClassVar[type[Any]] = NoParams
    """A frozen dataclass of the plugin's parameters; the compile step validates the
    routing file's ``params`` against it."""

    def __init__(self, params: Any = None) -> None:
        self.params = self.Params() if params is None else params

    def __repr__(self) -> str:
        shown = "" if isinstance(self.params, NoParams) else repr(self.params)
        return f"{type(self).__name__}({shown})"


class Filter(Plugin):
    """Keeps the candidates that may serve the request."""

    kind = "filter"
    cacheable: ClassVar[bool] = False
    """True when the result depends only on the snapshot, the model and the requested
    version: the scheduler then runs it once per snapshot and reuses the result."""

    def applies(self, req: SchedulingRequest) -> bool:
        """False when the filter would keep every candidate (it is then skipped)."""
        return True

    @abc.abstractmethod
    def filter(
        self, req: SchedulingRequest, candidates: tuple[Candidate, ...]
    ) -> tuple[Candidate, ...]:
        """The candidates to keep, in their order."""

    def why_empty(self, req: SchedulingRequest, before: tuple[Candidate, ...]) -> str:
        """The 503 message when this filter kept nothing of ``before``."""
        return (
            f"no endpoint of model {req.model.name!r} passed filter {self.name!r} "
            f"({len(before)} candidate(s) before it)"
        )


class Scorer(Plugin):
    """Rates each candidate in [0, 1] (higher is better); profiles weight and sum them."""

    kind = "scorer"
    per_request: ClassVar[bool] = True
    """False when the scores depend only on the candidates and the board's load and
    latency snapshots (not on the request, nor on in-flight counts): the profile then
    reuses them until a snapshot changes or :meth:`valid_until` passes."""

    sparse: ClassVar[bool] = False
    """True when most candidates usually score 0 (prefix affinity: only the endpoints that
    served this prompt before score): the hot path then calls :meth:`score_sparse` and
    adds only those scores, instead of a list as long as the pool."""

    @abc.abstractmethod
    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        """One score per candidate, in order, each in [0, 1]."""

    def add_weighted(
        self,
        req: SchedulingRequest,
        candidates: tuple[Candidate, ...],
        totals: list[float],
        weight: float,
    ) -> list[float]:
        """A new list: ``totals`` plus ``weight`` times this scorer's scores (the hot path's
        weighted sum; a scorer may fuse it with its own last pass over the pool)."""
        return [t + weight * s for t, s in zip(totals, self.score(req, candidates))]  # noqa: B905

    def score_sparse(
        self, req: SchedulingRequest, candidates: tuple[Candidate, ...]
    ) -> dict[int, float]:
        """The candidates' non-zero scores by position (for :attr:`sparse` scorers)."""
        return {i: s for i, s in enumerate(self.score(req, candidates)) if s}

    def valid_until(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> float:
        """Until when (``time.monotonic()``) scores that are not per request stay right."""
        return math.inf

    def picked(self, req: SchedulingRequest, primary: Candidate) -> None:
        """Told the primary the profile picked (scorers that learn from their own picks)."""


class Picker(Plugin):
    """Orders candidates: primary first, then fallbacks (at most ``n`` in all)."""

    kind = "picker"

    @abc.abstractmethod
    def pick(
        self,
        key: Hashable,
        candidates: Sequence[Candidate],
        scores: Sequence[float] | None,
        n: int,
    ) -> list[Candidate]:
        """``key`` names the candidate pool (model, version, requirements) for stateful
        pickers; ``scores`` are the weighted sums of the profile's scorers (``None``
        when it has none)."""


class RandomPicker(Picker):
    """A picker that draws at random, from a generator seeded by its ``seed`` parameter."""

    Params = SeedParams

    def __init__(self, params: SeedParams | None = None) -> None:
        super().__init__(params)
        self._rng = random.Random(self.params.seed)
