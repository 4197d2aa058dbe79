"""Packages made on the spot, and a folder index of them, so lock and install tests need no network.

`make_wheel` writes a one-module pure-Python wheel; `offline_index` points uv (resolving) and pip
(installing) at a folder of such wheels and at nothing else; `toy_workers` makes a workers folder
whose worker "toy" pins such packages (tests/test_worker_locks.py, tests/test_environments.py).
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A wheel `name-version-py3-none-any.whl` holding `name/__init__.py` (VERSION = version)."""
    folder.mkdir(parents=True, exist_ok=True)
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist_info}/METADATA": "Metadata-Version: 2.1\n"
                                 f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: cxrbench-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def offline_index(monkeypatch: pytest.MonkeyPatch, wheels: Path) -> None:
    """uv and pip (and the processes they start) find packages in `wheels` only."""
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.setenv("UV_FIND_LINKS", str(wheels))
    monkeypatch.setenv("UV_CACHE_DIR", str(wheels.parent / "uv-cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))


def toy_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(workers folder, wheels folder): worker "toy" pins toyframework 1.0 (which needs toyhelper)
    and toypin 1.0; the index holds those and toyframework 1.1, toyhelper 2.0 and 2.1, toypin 1.1."""
    wheels = tmp_path / "wheels"
    for version in ("1.0", "1.1"):
        make_wheel(wheels, "toyframework", version, requires=("toyhelper",))
        make_wheel(wheels, "toypin", version)
    for version in ("2.0", "2.1"):
        make_wheel(wheels, "toyhelper", version)
    offline_index(monkeypatch, wheels)
    toy = tmp_path / "workers" / "toy"
    (toy / "cxrbench_toy").mkdir(parents=True)
    (toy / "cxrbench_toy" / "__init__.py").touch()
    (toy / "worker.toml").write_text('name = "toy"\nbackend = "cxrbench_toy.trainer:Toy"\nrequirements = "requirements.txt"\n'
                                     'framework_package = "toyframework"\n')
    (toy / "requirements.txt").write_text("toyframework==1.0\ntoypin==1.0\n")
    return tmp_path / "workers", wheels
