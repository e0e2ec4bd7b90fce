"""Scheduling: which endpoints serve a request, in which order.

:mod:`framework` (plugin kinds), :mod:`profile` (filters -> weighted scorers -> picker),
:mod:`scheduler` (model -> profile, 404s, the decision), :mod:`plugins` (the registry of
plugins by name) and one module per plugin under ``filters/``, ``scorers/``, ``pickers/``.
"""
