"""Router overhead benchmark: Envoy direct vs Envoy + router, on the same nginx backends.

One run measures, with k6 on loopback:

* ``direct``     Envoy straight to nginx (the shipped bootstrap minus ext_proc).
* ``headers``    Envoy + router, KServe ``/v2/models/<m>/infer``: decided on headers
                 (``mode_override`` stops Envoy sending the body to the router).
* ``body``       Envoy + router, OpenAI ``/v1/chat/completions`` with a 4 KiB body.
* ``body_256k``  the same with a 256 KiB body.

each at a fixed arrival rate (``fixed``) and at saturation (``max``). See
``loadtest/README.md``. Usage: ``scripts/bench [--quick] [--json FILE] ...``
(``python -m loadtest.bench`` from the repository root).

``--router minimal`` runs the routed setups with ``loadtest/minimal_extproc.py`` (grpc.aio
+ upb + uvloop, round robin only) in place of the router; ``--router both`` runs each
routed setup with both, the probe's rows suffixed ``_min`` (e.g. ``headers_min``).

Modules: :mod:`.scenarios` (setups, options, plan, bodies, routing file, direct Envoy
bootstrap), :mod:`.cpu` (CPU from ``/proc``), :mod:`.processes` (nginx, direct Envoy,
the minimal-probe stack, k6, process reaping), :mod:`.measure` (one setup, one
measurement, py-spy), :mod:`.report` (table, deltas, targets, JSON, profile summary),
:mod:`.cli` (arguments, the run, ``main``).
"""
