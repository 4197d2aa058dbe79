"""`harness app`: serve the page (page.py) with Streamlit, on loopback unless told otherwise.

The command becomes `python -m streamlit run harness/app/page.py` with the server settings on its
command line and the page's own settings in its environment (page_settings.py). It replaces this
process (exec), so Ctrl-C and SIGTERM reach Streamlit directly and no parent is left behind.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import math
import os
import sys
from pathlib import Path

from harness.app.page_settings import DEFAULT_IDLE_MINUTES, DEFAULT_MAX_UPLOAD_MB, PageSettings

PAGE = Path(__file__).with_name("page.py")


def add_app_parser(subparsers) -> argparse.ArgumentParser:
    """The `app` subcommand and its options."""
    parser = subparsers.add_parser(
        "app", help="serve a web page that shows registered models' readings of uploaded chest X-rays",
        description="Serve the page: pick registered models, upload PNG, JPEG or DICOM chest X-rays, see each "
                    "model's probabilities side by side, where they disagree, and their class activation maps. "
                    "The page reads the registry and never writes to it. It has no authentication: it listens "
                    "on 127.0.0.1 unless --host says otherwise.")
    parser.add_argument("--registry", default=None, metavar="URI",
                        help="MLflow tracking URI of the model registry (default: the SQLite store in results/)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; anything else lets other machines in)")
    parser.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")
    parser.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                        help=f"largest file a user may upload, in MB (default {DEFAULT_MAX_UPLOAD_MB})")
    parser.add_argument("--idle-minutes", type=float, default=DEFAULT_IDLE_MINUTES, metavar="MINUTES",
                        help="unload a model (stop its worker) after this long unused, to bound memory "
                             f"(default {DEFAULT_IDLE_MINUTES:g})")
    return parser


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1): only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def streamlit_command(args: argparse.Namespace, registry: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that serve the page with these options (validated here, before exec)."""
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port}: must be between 1 and 65535")
    if args.max_upload_mb < 1:
        raise ValueError(f"--max-upload-mb {args.max_upload_mb}: must be at least 1")
    if not (args.idle_minutes > 0 and math.isfinite(args.idle_minutes)):
        raise ValueError(f"--idle-minutes {args.idle_minutes}: must be a positive number of minutes")
    settings = PageSettings(registry, args.max_upload_mb * 1024 * 1024, args.idle_minutes * 60)
    argv = [sys.executable, "-m", "streamlit", "run", str(PAGE),
            "--server.address", args.host, "--server.port", str(args.port),
            "--server.headless", "true",  # no browser opened, no e-mail prompt
            "--browser.gatherUsageStats", "false",
            # The size limit is enforced twice: by Streamlit before the bytes arrive, and by the page's decoder.
            "--server.maxUploadSize", str(args.max_upload_mb),
            # A served page is not edited: no watcher threads (and no inotify limits hit on a busy machine).
            "--server.fileWatcherType", "none", "--server.runOnSave", "false",
            "--client.toolbarMode", "viewer",  # no "Deploy" or developer menu on a page for readers
            "--theme.base", "light"]
    return argv, {**os.environ, **settings.environment()}


def run_app(args: argparse.Namespace) -> int:
    """Serve the page until interrupted; returns only when it cannot start (exit status 2)."""
    if importlib.util.find_spec("streamlit") is None:
        print("harness app: error: streamlit is not installed; pip install 'cxrbench[app]'", file=sys.stderr)
        return 2
    from harness.model_registry.store import registry_uri

    registry = registry_uri(args.registry)
    try:
        argv, environment = streamlit_command(args, registry)
    except ValueError as error:
        print(f"harness app: error: {error}", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        print(f"harness app: WARNING: listening on {args.host}: the page has no authentication, so anyone who "
              "can reach this port can upload images and use this machine's workers. Put it behind an "
              "authenticating proxy or keep --host 127.0.0.1.", file=sys.stderr)
    print(f"harness app: serving http://{args.host}:{args.port} from the registry {registry}", flush=True)
    os.execve(sys.executable, argv, environment)
    return 0  # not reached: exec replaces this process

