"""Operations: the worker supervisor, child processes, ``up`` (router + Envoy), Envoy
bootstrap rendering and ``explain``."""
