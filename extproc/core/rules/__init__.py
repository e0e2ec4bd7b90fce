"""Content rules on the request path: compiled conditions and the first-match evaluation."""
