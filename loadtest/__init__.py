"""Load tests and benchmarks (run from the repository root; see ``loadtest/README.md``)."""
