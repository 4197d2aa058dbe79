"""The null worker: no framework; it tests and benchmarks the harness itself.

`trainer.NullBackend` is the backend worker.toml names.
"""
