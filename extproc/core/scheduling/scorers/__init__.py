"""Scorer plugins: how well each candidate would serve the request, in [0, 1]."""
