"""The JAX worker: torchvision's networks in Flax (linen), trained with Optax, behind the worker contract."""
