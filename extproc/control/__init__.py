"""The control plane: everything that changes what the hot path reads, off the request path.

The routing file loads into typed config data (:mod:`extproc.control.schema`,
:mod:`extproc.control.loading`); :mod:`extproc.control.compile` turns config plus a
registry snapshot into the immutable :class:`~extproc.core.flow.RouterState`;
registry backends (:mod:`extproc.control.registry`) publish snapshots;
:mod:`extproc.control.reload` swaps new states in.
"""
