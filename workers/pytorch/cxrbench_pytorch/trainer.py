"""PyTorch implementation of the worker contract (`cxrbench_worker.backend.Backend`)."""

from __future__ import annotations

import os
import platform
import random
import warnings
from pathlib import Path

# cuBLAS reads this when its first handle is created; deterministic mode on CUDA refuses to run
# matmuls without it, so it is set before anything can initialise CUDA.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

from cxrbench_worker import torch_settings  # noqa: E402
from cxrbench_worker.backend import (  # noqa: E402
    Backend,
    BackendMetadata,
    ConfiguredModel,
    DeviceMemory,
    ModelSpec,
    UnsupportedOption,
)
from cxrbench_worker.host import cpu_model  # noqa: E402
from cxrbench_worker.mixed_precision import LOSS_SCALE_GROWTH_INTERVAL, LOSS_SCALE_INITIAL, precision_flags  # noqa: E402
from cxrbench_worker.neutral_weights import check_tensors  # noqa: E402

from .model import build_model, count_parameters, features_and_logits  # noqa: E402

_SKIPPED_SUFFIX = "num_batches_tracked"  # BatchNorm counter: not part of the neutral weights
# The dtype autocast computes in (cxrbench_worker.mixed_precision: the recipe every worker runs).
_AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}


def _flag(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _autocast_runs(device_type: str, dtype: torch.dtype) -> bool:
    """Whether this torch can autocast to `dtype` on `device_type` (CPU float16 came in torch 2.x)."""
    if not torch.amp.is_autocast_available(device_type):
        return False
    # An unsupported dtype is a warning and a disabled autocast, not an error: ask whether it took.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autocast(device_type, dtype=dtype):
            return torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == dtype


class PyTorchBackend(Backend):
    """torchvision models trained with torch.optim.Adam, fp32 (TF32 off) unless asked otherwise;
    bf16-mixed and fp16-mixed by torch.autocast (fp16 with a GradScaler), on CPU and CUDA alike."""

    architectures = ("resnet50", "densenet121")
    precisions = ("fp32", "bf16-mixed", "fp16-mixed")

    def __init__(self) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._spec: ModelSpec | None = None
        self._model: torch.nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._scaler: torch.amp.GradScaler | None = None
        self._autocast_dtype: torch.dtype | None = None
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None

    def metadata(self) -> BackendMetadata:
        """Versions, device, threads and the numerics flags as torch currently has them."""
        versions = {"torch": torch.__version__, "torchvision": torchvision.__version__,
                    "numpy": np.__version__, "python": platform.python_version()}
        if self.device.type == "cuda":
            versions["cuda"] = str(torch.version.cuda)
            versions["cudnn"] = str(torch.backends.cudnn.version())
            device = f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
        else:
            device = f"cpu ({cpu_model()})"
        return BackendMetadata(versions, device, torch.get_num_threads(), self._numerics())

    def configure(self, spec: ModelSpec) -> ConfiguredModel:
        """Seed, set numerics and threads, build the model and Adam; replaces any previous model."""
        # Validate before touching global state, so a refused request leaves the worker as it was.
        self.check_spec(spec)
        precision = spec.numerics.precision
        autocast_dtype = _AUTOCAST_DTYPES.get(precision)
        if autocast_dtype is not None and not _autocast_runs(self.device.type, autocast_dtype):
            raise UnsupportedOption("numerics.precision",
                                    f"torch {torch.__version__} has no {autocast_dtype} autocast on "
                                    f"{self.device.type}; use fp32 or another precision")

        if spec.threads > 0:
            torch.set_num_threads(spec.threads)
        torch_settings.set_numerics(spec.numerics.allow_tf32, spec.numerics.deterministic)
        # Initial weights come from torch's global RNG; seed every RNG anything might consult.
        torch.manual_seed(spec.seed)
        np.random.seed(spec.seed % 2**32)
        random.seed(spec.seed)

        model = build_model(spec.architecture, spec.num_labels).to(self.device)
        adam = spec.optimizer
        # weight_decay is L2 added to the gradient, PyTorch's definition (as AdamSettings says).
        self._optimizer = torch.optim.Adam(model.parameters(), lr=adam.learning_rate,
                                           betas=(adam.beta1, adam.beta2), eps=adam.epsilon,
                                           weight_decay=adam.weight_decay)
        # float16's range needs the loss scaled; bfloat16 has float32's exponents and needs none.
        self._autocast_dtype = autocast_dtype
        self._scaler = None
        if precision == "fp16-mixed":
            self._scaler = torch.amp.GradScaler(self.device.type, init_scale=LOSS_SCALE_INITIAL,
                                                growth_interval=LOSS_SCALE_GROWTH_INTERVAL)
        as_channels = {"dtype": torch.float32, "device": self.device}
        self._mean = torch.tensor(spec.mean, **as_channels).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, **as_channels).view(1, 3, 1, 1)
        self._model, self._spec = model, spec
        trainable, non_trainable = count_parameters(model)
        return ConfiguredModel(trainable, non_trainable, self._numerics())

    def _numerics(self) -> dict[str, str]:
        precision = self._spec.numerics.precision if self._spec is not None else "fp32"
        return {
            **precision_flags(precision),
            "autocast": str(self._autocast_dtype).removeprefix("torch.") if self._autocast_dtype else "off",
            "deterministic": _flag(torch.are_deterministic_algorithms_enabled()),
            "allow_tf32_matmul": _flag(torch.backends.cuda.matmul.allow_tf32),
            "allow_tf32_cudnn": _flag(torch.backends.cudnn.allow_tf32),
            "deterministic_algorithms": _flag(torch.are_deterministic_algorithms_enabled()),
            "cudnn_benchmark": _flag(torch.backends.cudnn.benchmark),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }

    def _require(self, method: str) -> torch.nn.Module:
        return self.require_model(self._model, method)

    def _images(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 (N,H,W) -> normalised float32 (N,3,H,W) on the device; uint8 crosses the bus."""
        x = self._to_device(self.check_pixels(pixels, self._spec.image_size)).to(torch.float32).div_(255.0)
        x = x.unsqueeze(1).expand(-1, 3, -1, -1)
        return (x - self._mean) / self._std

    def _labels(self, labels: np.ndarray, batch: int) -> torch.Tensor:
        expected = (batch, self._spec.num_labels)
        if labels.shape != expected:
            raise ValueError(f"labels must have shape {expected}, got {labels.shape}")
        return self._to_device(labels).to(torch.float32)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        # torch.from_numpy wants a writable array (decoded request bytes are read-only): copy those.
        if not (array.flags.writeable and array.flags.c_contiguous):
            array = np.array(array, order="C")
        return torch.from_numpy(array).to(self.device)

    def _autocast(self) -> torch.autocast:
        dtype = self._autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def train_step(self, pixels: np.ndarray, labels: np.ndarray) -> float:
        """One Adam step in train mode; returns the mean BCE-with-logits loss once it is done."""
        model = self._require("train_step")
        x = self._images(pixels)
        y = self._labels(labels, x.shape[0])
        model.train()
        self._optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        if self._scaler is None:
            loss.backward()
            self._optimizer.step()
        else:
            self._scaler.scale(loss).backward()
            self._scaler.step(self._optimizer)
            self._scaler.update()
        return float(loss.item())

    def synchronize(self) -> None:
        """Wait for every CUDA kernel queued so far; on a CPU torch runs ops as they are called."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Eval-mode logits, float32 (N, num_labels)."""
        model = self._require("predict")
        model.eval()
        with torch.inference_mode(), self._autocast():
            logits = model(self._images(pixels))
        return logits.to("cpu", torch.float32).numpy()

    def feature_maps(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode final feature maps float32 (N, C, h, w) and logits (N, num_labels), under the
        autocast `predict` runs; the logits are `predict`'s (torchvision's forward, op for op)."""
        model = self._require("feature_maps")
        model.eval()
        with torch.inference_mode(), self._autocast():
            features, logits = features_and_logits(model, self._images(pixels))
        return features.to("cpu", torch.float32).numpy(), logits.to("cpu", torch.float32).numpy()

    def set_learning_rate(self, learning_rate: float) -> None:
        """Set the learning rate of every parameter group."""
        self._require("set_learning_rate")
        learning_rate = self.check_learning_rate(learning_rate)
        for group in self._optimizer.param_groups:
            group["lr"] = learning_rate

    def export_weights(self) -> dict[str, np.ndarray]:
        """Parameters and BatchNorm running stats, torchvision names and layouts, float32 copies."""
        model = self._require("export_weights")
        return {
            name: tensor.detach().to("cpu", torch.float32, copy=True).contiguous().numpy()
            for name, tensor in model.state_dict().items()
            if not name.endswith(_SKIPPED_SUFFIX)
        }

    def import_weights(self, tensors: dict[str, np.ndarray]) -> None:
        """Load neutral weights; ValueError naming missing, unexpected or misshapen tensors.

        `num_batches_tracked` is kept as it is: it is not part of the neutral format. Adam's state
        is left untouched.
        """
        model = self._require("import_weights")
        state = model.state_dict()
        expected = {name: t for name, t in state.items() if not name.endswith(_SKIPPED_SUFFIX)}
        check_tensors({name: tuple(t.shape) for name, t in expected.items()}, tensors)
        new_state = {name: t for name, t in state.items() if name.endswith(_SKIPPED_SUFFIX)}
        for name in expected:
            new_state[name] = torch.tensor(np.asarray(tensors[name], dtype=np.float32))
        model.load_state_dict(new_state, strict=True)

    def export_native(self, directory: Path) -> str:
        """The state_dict (parameters and buffers, num_batches_tracked included) with torch.save."""
        torch.save(self._require("export_native").state_dict(), directory / "model.pt")
        return "torch.save(state_dict) .pt"

    def device_memory(self, reset_peak: bool) -> DeviceMemory:
        """What torch's CUDA caching allocator handed out to tensors (not what it reserved)."""
        if self.device.type != "cuda":
            return DeviceMemory()
        index = torch.cuda.current_device()
        memory = DeviceMemory(
            device=f"cuda:{index} ({torch.cuda.get_device_name(index)})",
            reported=True,
            peak_bytes=torch.cuda.max_memory_allocated(index),
            current_bytes=torch.cuda.memory_allocated(index),
            total_bytes=torch.cuda.get_device_properties(index).total_memory,
        )
        if reset_peak:
            torch.cuda.reset_peak_memory_stats(index)
        return memory
