"""A study: every (worker, training seed, fold) run of a benchmark, each the unit of work.

`runs` plans the runs and executes one; `ledger` commits a finished run into the run directory
atomically and reads back what is finished (for `--resume`); `sequential` is the executor that runs
them one after another on this machine; `harness.cluster` holds the one that spreads them over Ray.
"""
