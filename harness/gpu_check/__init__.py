"""`bin/gpu-check`: what the harness costs the PyTorch worker on one GPU, and parity of the GPU workers.

`machine` asks the GPU and the interpreters what they have; `command` runs the steps (subprocesses:
the harness, benchmarks/bare_pytorch.py, parity); `results` reads what they wrote and judges it.
Standard library only: the check runs in any Python 3.11+.
"""
