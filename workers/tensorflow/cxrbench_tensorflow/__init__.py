"""The TensorFlow worker: torchvision's networks written in tf.nn ops, no Keras.

`trainer.TensorFlowBackend` is the backend worker.toml names; the package has a name of its own so
that none of its modules (model, layers, adam, ...) can shadow an installed package or another worker's.
"""
