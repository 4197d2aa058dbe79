"""Read the tensors of a `torch.save()`d state dict with numpy alone, so the harness never imports torch.

The zip format torch has written since 1.6 holds `<archive>/data.pkl` (a pickle whose tensors refer
to storages by key), one raw little-endian file per storage in `<archive>/data/<key>`, and
`<archive>/byteorder`. The pickle is unpickled by a restricted `Unpickler` that resolves only the
handful of names a state dict uses, so a malicious checkpoint cannot run code.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

# The legacy (pre-1.6) format starts with a pickled magic number (torch.serialization.MAGIC_NUMBER).
LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
WRAPPER_KEYS = ("state_dict", "model")  # training scripts often save {"epoch": ..., "state_dict": ...}
DATA_PARALLEL_PREFIX = "module."

# numpy dtype of each storage type; bfloat16 is read as its raw 16 bits and widened to float32 later.
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "UntypedStorage": "u1",
}


@dataclass(frozen=True)
class StorageType:
    """Stands in for a torch storage class inside the pickle: just the element type it implies."""

    name: str
    dtype: str

    @property
    def is_bfloat16(self) -> bool:
        return self.name == "BFloat16Storage"


def _rebuild_tensor_v2(
    storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_ignored: Any
) -> np.ndarray:
    """numpy twin of torch._utils._rebuild_tensor_v2; requires_grad, hooks and metadata are dropped."""
    if len(size) != len(stride):
        raise ValueError(f"tensor has {len(size)} sizes but {len(stride)} strides")
    # The last element the view touches must lie inside the storage, or as_strided would read past it.
    needed = 0 if 0 in size else offset + 1 + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if needed > storage.size:
        raise ValueError(f"truncated storage: tensor needs {needed} elements, storage has {storage.size}")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride], writeable=False
    )
    return np.array(view, order="C")  # a contiguous copy that no longer aliases the shared storage


def _rebuild_parameter(data: np.ndarray, *_ignored: Any) -> np.ndarray:
    """numpy twin of torch._utils._rebuild_parameter: a Parameter is just its data here."""
    return data


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
    ("torch.storage", "UntypedStorage"): StorageType("UntypedStorage", "u1"),
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles data.pkl, resolving only ALLOWED_GLOBALS and loading storages from the archive."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, byteorder: str) -> None:
        super().__init__(archive.open(f"{prefix}data.pkl"))
        self.archive, self.prefix = archive, prefix
        self.endian: Literal["<", ">"] = "<" if byteorder == "little" else ">"
        self.storages: dict[str, np.ndarray] = {}  # views of one storage share it, as in torch

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ValueError(f"refuses to unpickle {module}.{name} (not part of a state dict)") from None

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ValueError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType):
            raise ValueError(f"persistent id names {storage_type!r}, not a storage type")
        if key not in self.storages:
            self.storages[key] = self._load_storage(storage_type, str(key), int(numel))
        return self.storages[key]

    def _load_storage(self, storage_type: StorageType, key: str, numel: int) -> np.ndarray:
        name = f"{self.prefix}data/{key}"
        try:
            raw = self.archive.read(name)
        except KeyError:
            raise ValueError(f"storage {name} is missing from the archive") from None
        dtype = np.dtype(storage_type.dtype).newbyteorder(self.endian)
        if len(raw) < numel * dtype.itemsize:
            raise ValueError(f"truncated storage {name}: {len(raw)} bytes, expected {numel * dtype.itemsize}")
        values = np.frombuffer(raw, dtype=dtype, count=numel).astype(dtype.newbyteorder("="), copy=False)
        if storage_type.is_bfloat16:
            # bfloat16 is the top half of a float32: shift the bits up and reinterpret.
            values = (values.astype(np.uint32) << 16).view(np.float32)
        return values


def _archive_prefix(archive: zipfile.ZipFile) -> str:
    """The top-level folder of the archive (torch names it after the file), with its trailing slash."""
    for name in archive.namelist():
        folder, _, rest = name.partition("/")
        if rest == "data.pkl":
            return folder + "/"
    raise ValueError("no <archive>/data.pkl in the zip: not written by torch.save()")


def _unpickle(path: Path) -> Any:
    """The object torch.save() pickled, with every tensor as a numpy array."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            head = file.read(64)
        if head.startswith(b"\x80") and LEGACY_MAGIC in head:
            raise ValueError(
                f"{path}: saved in torch's legacy (pre-1.6) format, which is not supported; re-save it "
                f"with any PyTorch >= 1.6: torch.save(torch.load('{path}'), 'new.pth')"
            )
        raise ValueError(f"{path}: not a zip archive (truncated, or not written by torch.save())")
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive)
            names = set(archive.namelist())
            byteorder = "little"
            if f"{prefix}byteorder" in names:
                byteorder = archive.read(f"{prefix}byteorder").decode().strip()
            if byteorder not in ("little", "big"):
                raise ValueError(f"unknown byteorder {byteorder!r}")
            return _StateDictUnpickler(archive, prefix, byteorder).load()
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, TypeError, AttributeError) as error:
        # A corrupt archive or pickle: torch would fail too; say which file and why.
        raise ValueError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from None


def read_torch_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a torch.save()d state dict, as float32 (or their own dtype) numpy arrays, no torch needed.

    bfloat16 tensors come back as float32; every other dtype is kept. A checkpoint that wraps the
    state dict under "state_dict" or "model" is unwrapped, and a DataParallel "module." prefix is
    stripped from every key. Raises ValueError naming the file for anything it cannot read.
    """
    path = Path(path)
    loaded = _unpickle(path)
    for key in WRAPPER_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: holds a {type(loaded).__name__}, not a state dict")
    tensors: dict[str, np.ndarray] = {}
    for key, value in loaded.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[str(key).removeprefix(DATA_PARALLEL_PREFIX)] = value
    return tensors
