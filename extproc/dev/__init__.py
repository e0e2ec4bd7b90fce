"""Development tooling: the demo, small model servers and a local Consul agent.

Used by ``model-router demo``, the tests and the benchmarks; nothing in the router
itself imports it.
"""
