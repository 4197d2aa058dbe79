"""The host-side harness: data, splits, batches, runtimes, metrics and reports. Imports no deep-learning framework."""
