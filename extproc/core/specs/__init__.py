"""Model specs on the request path: their data types and the per-request checks (422)."""
