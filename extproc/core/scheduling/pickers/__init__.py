"""Picker plugins: the order in which candidates are tried (primary, then fallbacks)."""
