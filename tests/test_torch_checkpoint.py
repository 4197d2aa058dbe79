"""harness.models.weights.torch_checkpoint reads real torch.save() files exactly, without torch, and safely."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from harness.runtime.registry import discover_workers
from harness.config import cache_root
from harness.runtime.environments import ensure_environment
from harness.models.weights.torch_checkpoint import read_torch_checkpoint

# Run by the PyTorch worker's interpreter: writes checkpoints and, beside each, what torch itself
# holds, as .npz (bfloat16 widened to float32, the reader's documented result).
MAKE_CHECKPOINTS = r"""
import sys, collections
import numpy as np, torch, torchvision
out = sys.argv[1]
torch.manual_seed(0)

def dump(state, name):
    widened = {k: (v.float() if v.dtype == torch.bfloat16 else v).detach() for k, v in state.items()}
    np.savez(f"{out}/{name}.npz", **{k: v.numpy() for k, v in widened.items()})

base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
small = collections.OrderedDict(
    f32=torch.randn(3, 5),
    f16=torch.randn(7).half(),
    bf16=torch.tensor([1.5, -2.25, 2.0**100, -(2.0**-100), 1 / 3]).bfloat16(),
    i64=torch.tensor([0, -1, 2**40], dtype=torch.int64),
    transposed=base.t(),  # non-contiguous: strides (1, 6)
    rows=base[1:3],  # shares base's storage at offset 6
    base=base,
    flag=torch.tensor([True, False]),
    param=torch.nn.Parameter(torch.ones(2, 2)),
    scalar=torch.tensor(7.0),
)
torch.save(small, f"{out}/small.pt")
dump(small, "small")
torch.save(small, f"{out}/legacy.pt", _use_new_zipfile_serialization=False)
wrapped = collections.OrderedDict((f"module.{k}", v) for k, v in list(small.items())[:3])
torch.save({"epoch": 3, "state_dict": wrapped}, f"{out}/wrapped_state_dict.pt")
torch.save({"model": wrapped}, f"{out}/wrapped_model.pt")

resnet = torchvision.models.resnet50(weights=None).state_dict()
torch.save(resnet, f"{out}/resnet50.pt")
# Compare against the file as torch reads it back, not only the in-memory model.
dump(torch.load(f"{out}/resnet50.pt", weights_only=True), "resnet50")
"""


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of checkpoints written by real torch, with the expected arrays beside them."""
    python = ensure_environment(discover_workers()["pytorch"], cache_root()).python
    folder = tmp_path_factory.mktemp("checkpoints")
    command = [str(python), "-c", MAKE_CHECKPOINTS, str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return folder


def assert_same_tensors(read: dict[str, np.ndarray], expected_npz: Path) -> None:
    with np.load(expected_npz) as expected:
        assert list(read) == list(expected.keys())
        for key in expected.keys():
            assert read[key].dtype == expected[key].dtype, key
            assert read[key].shape == expected[key].shape, key
            np.testing.assert_array_equal(read[key], expected[key], err_msg=key)
            assert read[key].flags.c_contiguous and read[key].flags.writeable, key


@pytest.mark.framework
def test_small_state_dict_matches_torch_for_every_dtype_stride_and_offset(checkpoints: Path):
    read = read_torch_checkpoint(checkpoints / "small.pt")
    assert_same_tensors(read, checkpoints / "small.npz")
    # 1/3 in bfloat16 is 0x3EAB: 8 bits of mantissa, widened exactly.
    assert read["bf16"].dtype == np.float32
    assert read["bf16"].tolist() == [1.5, -2.25, 2.0**100, -(2.0**-100), 0.333984375]
    assert read["f16"].dtype == np.float16 and read["i64"].tolist() == [0, -1, 2**40]
    assert read["transposed"].tolist()[0] == [0.0, 6.0, 12.0, 18.0]
    assert read["rows"].tolist() == [list(range(6, 12)), list(range(12, 18))]
    assert read["scalar"].shape == () and read["scalar"] == 7.0
    # Views of one storage come back as independent copies.
    read["rows"][0, 0] = -1.0
    assert read["base"][1, 0] == 6.0


@pytest.mark.framework
def test_torchvision_resnet50_state_dict_round_trips_exactly(checkpoints: Path):
    read = read_torch_checkpoint(checkpoints / "resnet50.pt")
    assert len(read) == 320 and read["fc.weight"].shape == (1000, 2048)
    assert read["bn1.num_batches_tracked"].dtype == np.int64
    assert_same_tensors(read, checkpoints / "resnet50.npz")


@pytest.mark.framework
@pytest.mark.parametrize("name", ["wrapped_state_dict.pt", "wrapped_model.pt"])
def test_wrapped_state_dict_is_unwrapped_and_module_prefix_stripped(checkpoints: Path, name: str):
    read = read_torch_checkpoint(checkpoints / name)
    assert list(read) == ["f32", "f16", "bf16"]
    np.testing.assert_array_equal(read["f32"], read_torch_checkpoint(checkpoints / "small.pt")["f32"])


@pytest.mark.framework
def test_legacy_format_is_refused_with_how_to_resave(checkpoints: Path):
    path = checkpoints / "legacy.pt"
    with pytest.raises(ValueError, match="legacy") as error:
        read_torch_checkpoint(path)
    assert str(path) in str(error.value) and "torch.save(torch.load(" in str(error.value)


@pytest.mark.framework
def test_truncated_file_is_a_value_error_naming_it(checkpoints: Path, tmp_path: Path):
    data = (checkpoints / "small.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{path}: not a zip archive"):
        read_torch_checkpoint(path)


@pytest.mark.framework
def test_storage_shorter_than_its_tensors_is_a_value_error(checkpoints: Path, tmp_path: Path):
    path = tmp_path / "short_storage.pt"
    with zipfile.ZipFile(checkpoints / "small.pt") as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, data[:-4] if name.endswith("/data/0") else data)
    with pytest.raises(ValueError, match=f"{path}: truncated storage .*/data/0"):
        read_torch_checkpoint(path)


def test_pickled_os_system_is_refused_without_running(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        # Protocol-0 pickle of os.system("touch <marker>"): runs the command under plain pickle.load.
        archive.writestr("evil/data.pkl", f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(ValueError, match=f"{path}: refuses to unpickle os.system"):
        read_torch_checkpoint(path)
    assert not marker.exists()


def test_missing_file_and_non_checkpoints_are_value_errors(tmp_path: Path):
    with pytest.raises(ValueError, match=f"{tmp_path / 'absent.pt'}: no such file"):
        read_torch_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "noise.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a zip archive"):
        read_torch_checkpoint(tmp_path / "noise.pt")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("x/version", "3")
    with pytest.raises(ValueError, match="no <archive>/data.pkl"):
        read_torch_checkpoint(tmp_path / "empty.zip")
