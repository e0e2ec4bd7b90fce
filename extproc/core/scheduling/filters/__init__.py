"""Filter plugins: which candidates may serve the request."""
