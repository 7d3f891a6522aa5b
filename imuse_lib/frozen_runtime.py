"""How a frozen backbone runs: ONNX Runtime on the CPU, PyTorch elsewhere.

The backbones never train, so on a CPU their forward pass can run on ONNX Runtime, which is
several times faster than eager PyTorch for these networks on 2 cores (measured: MobileNetV2
1.58 s -> 0.18 s per batch of 32 views, Musicnn's convolutions 0.64 s -> 0.23 s per 16 crops)
and gives the same numbers to float rounding (max |diff| ~5e-6; ``tests/test_frozen_runtime.py``
holds every backbone kind to 1e-4). What runs where:

* images: the whole backbone module is exported;
* mel-spectrogram taggers (:class:`~imuse_lib.models.audio.MelModel`): torch computes the
  spectrogram (the exporter does not take the STFT), ONNX Runtime runs the ``body``;
* anything that does not export, or whose exported graph does not give the module's numbers
  on its first input (the image statistics: the exporter approximates their grid pooling),
  a GPU device, or ``IMUSE_RUNTIME=torch``: PyTorch, as before.

The exported graph is cached on disk under ``<cache>/onnx/``, named by a hash of the module's
class, parameters, input shape and the torch version, so a cold ``imuse recommend`` loads it
instead of exporting again (about a second). :func:`runtime_name` is what the feature store
records as the runtime that made an entry.
"""

from __future__ import annotations

import hashlib
import io as _io
import os
import warnings
import weakref

import numpy as np

from . import config

RUNTIME_ENV = "IMUSE_RUNTIME"  # "torch" (or "pytorch"): never ONNX Runtime
OPSET = 17
PARITY_RTOL, PARITY_ATOL = 1e-4, 1e-4  # float rounding between the runtimes is ~1e-6


def _wanted(device) -> bool:
    if os.environ.get(RUNTIME_ENV, "").strip().lower() in ("torch", "pytorch"):
        return False
    if device is not None and getattr(device, "type", str(device)) != "cpu":
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _exported_part(module):
    """(torch prefix or None, the module to export) for a frozen backbone module, or None."""
    import torch

    if not isinstance(module, torch.nn.Module):
        return None
    if callable(getattr(module, "mel", None)) and callable(getattr(module, "body", None)):

        class Body(torch.nn.Module):  # module.body as a module of its own, for the exporter
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner.body(x)

        return module.mel, Body(module).eval()
    return None, module


def _graph_key(module, shape) -> str:
    import torch

    h = hashlib.sha256()
    h.update(f"{type(module).__module__}.{type(module).__qualname__}|{torch.__version__}|{OPSET}|{shape}".encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def _export(module, example) -> bytes:
    import torch

    buf = _io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buf, opset_version=OPSET, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    return buf.getvalue()


def _graph_bytes(module, example) -> bytes:
    """The exported graph, from the disk cache when it is there (written atomically)."""
    from .errors import DataError
    from .io import atomic_path

    key = _graph_key(module, tuple(example.shape[1:]))
    path = config.cache_dir() / "onnx" / f"{key}.onnx"
    if path.is_file():
        return path.read_bytes()
    data = _export(module, example)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except (OSError, DataError):
        pass  # a read-only cache: use the graph from memory
    return data


def _session(data: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


# Per module: {(input shape, threads): run function}, or None where it runs on PyTorch (its
# export failed). Weak keys: nothing is kept alive, and nothing is added to the module itself,
# which Ray pickles to its workers.
_RUNNERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def runner(module, example, device=None):
    """A function [B, ...] tensor -> [B, D] numpy array running ``module`` on ONNX Runtime
    (after its torch prefix), or None where PyTorch should run it (see the module doc)."""
    import torch

    if not _wanted(device):
        return None
    try:
        per_module = _RUNNERS.setdefault(module, {})
    except TypeError:  # not weak-referenceable: not a torch module
        return None
    if per_module is None:
        return None
    slot = (tuple(example.shape[1:]), max(1, torch.get_num_threads()))
    if slot not in per_module:
        per_module[slot] = _make_runner(module, example, slot[1])
        if per_module[slot] is None:
            _RUNNERS[module] = None
            return None
    return per_module[slot]


def _make_runner(module, example, threads: int):
    import torch

    part = _exported_part(module)
    if part is None:
        return None
    prefix, exported = part
    with torch.inference_mode():
        x = prefix(example[:1]) if prefix is not None else example[:1]
    probe = 0.9 * x.roll(1, dims=-1)  # not the traced input: a graph that froze its input would pass on that
    try:
        session = _session(_graph_bytes(exported, x), threads)
        got = session.run(["y"], {"x": probe.numpy()})[0]
    except Exception:  # noqa: BLE001 - a module the exporter or the runtime refuses runs on PyTorch
        return None
    with torch.inference_mode():
        want = exported(probe).float().numpy()
    # The exporter approximates a few ops (adaptive pooling over sizes that do not divide): a
    # graph that does not give the module's numbers is not used.
    if got.shape != want.shape or not np.allclose(got, want, rtol=PARITY_RTOL, atol=PARITY_ATOL):
        return None

    def run(batch):
        with torch.inference_mode():
            x = prefix(batch) if prefix is not None else batch
        return session.run(["y"], {"x": np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]

    return run


def runtime_name(module=None, device=None) -> str:
    """The runtime that ran a frozen module in this process (for provenance): ONNX Runtime
    once :func:`runner` has served it, else PyTorch."""
    import torch

    try:
        served = module is not None and bool(_RUNNERS.get(module))
    except TypeError:  # not weak-referenceable: not a torch module
        served = False
    if served:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__} (CPU)"
    return f"torch {torch.__version__} ({'cpu' if device is None else device})"
