"""The Keras worker: torchvision's networks rebuilt from keras.layers, trained through Keras's own API.

`trainer.KerasBackend` is the backend worker.toml names; the package has a name of its own so that
none of its modules (model, runtime, ...) can shadow an installed package or another worker's.
"""
