"""One-off measurement scripts behind docs/results/analysis/ (not part of the library)."""
