"""Servers bidfilter is compared with; each runs as its own script (its own process)."""
