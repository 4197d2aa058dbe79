"""The PyTorch worker: torchvision's networks trained with torch.optim.Adam.

`trainer.PyTorchBackend` is the backend worker.toml names; the package has a name of its own so that
none of its modules can shadow an installed package or another worker's.
"""
