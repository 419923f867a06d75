"""Plumbing every method shares: input checks, feature hooks, atomic I/O, progress bars, map
normalisation and seed-mask evaluation. Nothing here imports a method."""
