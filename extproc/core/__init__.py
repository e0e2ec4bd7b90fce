"""The hot request path: pure, synchronous, no I/O and no pydantic.

One HTTP request flows through :mod:`extproc.core.flow` (the sans-I/O state machine):
the protocol adapters (:mod:`extproc.core.protocols`) understand it, content rules
(:mod:`extproc.core.rules`) may re-target it, specs (:mod:`extproc.core.specs`) check
it, the scheduling framework (:mod:`extproc.core.scheduling`) picks endpoints from the
registry snapshot (:mod:`extproc.core.snapshot`), and :mod:`extproc.core.envoy_wire`
turns the outcome into Envoy's ext_proc messages. Everything here reads immutable
state compiled by :mod:`extproc.control` and never waits.
"""
