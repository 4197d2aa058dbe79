"""The worker SDK: everything a framework worker shares (gRPC servicer, batch checks, neutral weights).

A framework worker implements `cxrbench_worker.backend.Backend` and knows nothing of gRPC.
"""
