"""ExportNative's measuring half: let the backend save its model, count what it wrote, delete it.

The backend only writes its framework's files into a fresh directory and names the format; size,
count and clean-up are done here, once, so every worker is measured the same way.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NativeExport:
    """What one native save wrote: the format in words, total bytes, file count, seconds taken."""

    format: str
    size_bytes: int
    files: int
    save_seconds: float
    archive: bytes = b""  # the files as an uncompressed tar, when asked for


def files_under(directory: Path) -> tuple[int, int]:
    """(number of regular files, their total apparent size in bytes) anywhere under `directory`."""
    count = size = 0
    for root, _, names in os.walk(directory):
        for name in names:
            status = os.lstat(os.path.join(root, name))
            count += 1
            size += status.st_size
    return count, size


def archive_of(directory: Path) -> bytes:
    """Every file under `directory` as an uncompressed tar, paths relative to it, in sorted order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    return buffer.getvalue()


def measure_native_export(save: Callable[[Path], str], include_archive: bool = False) -> NativeExport:
    """Call `save(directory)` on a fresh temporary directory, measure what it wrote, delete it all.

    The directory is made under the process's temporary folder ($TMPDIR) and removed even when
    `save` raises. With `include_archive` the files are also returned as a tar (the model registry
    keeps the framework's own export beside the neutral weights). RuntimeError when `save` names no
    format or writes nothing.
    """
    with tempfile.TemporaryDirectory(prefix="cxrbench-export-") as name:
        directory = Path(name)
        start = time.perf_counter()
        format_name = save(directory)
        seconds = time.perf_counter() - start
        files, size = files_under(directory)
        archive = archive_of(directory) if include_archive and files else b""
    if not format_name:
        raise RuntimeError("the backend's export_native returned no format name")
    if files == 0:
        raise RuntimeError(f"the backend's export_native ({format_name}) wrote no file")
    return NativeExport(format_name, size, files, seconds, archive)
