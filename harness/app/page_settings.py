"""The page's settings, handed from `harness app` to the Streamlit script through environment variables.

Streamlit runs the page as a script in its own server process, so the command line cannot pass Python
objects to it; environment variables are the channel that survives `streamlit run` (and AppTest, which
runs the script in the test's own process, reads them the same way).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

REGISTRY = "CXRBENCH_APP_REGISTRY"
MAX_UPLOAD_BYTES = "CXRBENCH_APP_MAX_UPLOAD_BYTES"
IDLE_SECONDS = "CXRBENCH_APP_IDLE_SECONDS"

DEFAULT_MAX_UPLOAD_MB = 50
DEFAULT_IDLE_MINUTES = 10.0


@dataclass(frozen=True)
class PageSettings:
    """What one server process serves: which registry, how large an upload may be, when idle models unload."""

    registry: str
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    idle_seconds: float = DEFAULT_IDLE_MINUTES * 60

    def environment(self) -> dict[str, str]:
        """The environment variables that carry these settings to the page."""
        return {REGISTRY: self.registry, MAX_UPLOAD_BYTES: str(self.max_upload_bytes),
                IDLE_SECONDS: repr(self.idle_seconds)}


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"environment variable {name}={text!r} must be positive")
    return value


def settings_from_environment(environ: Mapping[str, str] | None = None) -> PageSettings:
    """The settings `harness app` put into the environment; defaults where a variable is missing.

    The default registry is the one every other command uses (a SQLite store in results/), so
    `streamlit run harness/app/page.py` alone also serves something sensible.
    """
    environ = os.environ if environ is None else environ
    registry = environ.get(REGISTRY) or _default_registry()
    max_bytes = int(_number(environ, MAX_UPLOAD_BYTES, DEFAULT_MAX_UPLOAD_MB * 1024 * 1024))
    return PageSettings(registry, max_bytes, _number(environ, IDLE_SECONDS, DEFAULT_IDLE_MINUTES * 60))


def _default_registry() -> str:
    from harness.model_registry.store import registry_uri

    return registry_uri(None)
