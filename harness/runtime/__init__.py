"""Where workers run and how the harness talks to them: the worker registry (`--workers`), the gRPC
client, and the runtimes (`local` virtual environments, `docker` compose services, `remote`)."""
