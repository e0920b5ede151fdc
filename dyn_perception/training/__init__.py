"""Offline training, pruning, int8 export and profiling of early-exit CNNs (needs torch)."""
