"""Process-wide settings of each Keras backend, one module per backend with the same functions.

Keras computes the same layers on TensorFlow, JAX or torch; what differs is everything around the
layers: thread pools, TF32, determinism, the device, its memory, the framework versions. Each module
here sets and reports those for its framework, under the same names (`cxrbench_keras.runtime` picks
the one of the running backend):

    JIT_COMPILE_DEFAULT   the `jit_compile` option's default on this backend
    prepare()             what must happen before the framework's runtime starts (called once)
    jit_conflict(jit_compile, deterministic) -> str | None   why that pair is refused, if it is
    set_threads(threads)  intra-op threads (0: the framework's default); may raise ThreadPoolsFixed
    set_numerics(allow_tf32, deterministic) -> dict   TF32 and determinism; notes on what could not be set
    numerics_flags() -> dict   the switches as the framework has them now (reported, never assumed)
    thread_count() -> int
    versions_and_device() -> (framework versions, "cuda:0 (NAME)" / "gpu:0 (NAME)", or None on a CPU)
    synchronize()         wait for the device's queued work
    device_memory(reset_peak, started) -> DeviceMemory

Each module imports its framework at the top: it is imported only in that backend's environment.
"""
