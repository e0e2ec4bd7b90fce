"""The gateway's control side: the ``auth``, ``tenants`` and ``quotas`` sections
(:mod:`.schema`), the keys file (:mod:`.keys`) and the Redis store that shares quotas
between workers and replicas (:mod:`.store`). Compiled for the hot path
(:mod:`extproc.core.gateway`) by :mod:`extproc.control.compile.gateway`."""
