"""The host-side harness. Imports no deep-learning framework.

Packages follow the data, each importing only those before it (tests/test_layering.py):
`data` (datasets, pixel store, splits, augmentation, batches) -> `models` (architectures, starting
weights) -> `runtime` (where workers run, the client that talks to them) -> `records` (the run
directory) -> `training` (the loop, the schedule, the parity probe) -> `evaluation` (metrics and
statistics, pure arithmetic on arrays) -> `report`; the commands (`cli`, `config`, `benchmark`,
`parity_check`, `tracking`, `gpu_check`) sit on top. `progress` (bars and log lines) is used by all.
"""
