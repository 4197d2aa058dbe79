"""What every session of one server process shares: the model pool and the registry's list of models.

Streamlit runs the page once per session and per interaction, each in its own thread. The pool must be
one per process (st.cache_resource): it holds one worker process per loaded model, queues the sessions'
requests to it and unloads idle models, which is what keeps memory bounded however many people upload.
The registry listing is cached for a short time so a model registered while the page runs appears
within a minute without every rerun querying MLflow.

Tests replace `model_pool` and `registered_models` (AppTest runs the page in the test's own process).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import streamlit as st

from harness.model_registry.registered import RegisteredModel
from harness.serving.reading import Reading

REGISTRY_TTL_SECONDS = 30


class Pool(Protocol):
    """What the page asks of harness.serving's ModelPool."""

    def read(self, reference: str, images: np.ndarray, maps: bool = False) -> Reading: ...

    def memory(self) -> dict[str, int]: ...


@st.cache_resource(show_spinner=False)
def _shared_pool(uri: str, idle_seconds: float) -> Pool:
    from harness.serving.pool import ModelPool

    return ModelPool(uri, idle_seconds=idle_seconds)  # its workers stop at exit (harness.serving's atexit)


def model_pool(uri: str, idle_seconds: float) -> Pool:
    """The server process's one model pool for this registry (made on first use)."""
    return _shared_pool(uri, idle_seconds)


@st.cache_data(ttl=REGISTRY_TTL_SECONDS, show_spinner=False)
def _listing(uri: str) -> list[RegisteredModel]:
    from harness.model_registry.store import list_models

    return list_models(uri)


def registered_models(uri: str) -> list[RegisteredModel]:
    """Every registered model version in the registry (read only: the page never writes to it)."""
    return _listing(uri)
