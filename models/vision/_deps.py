"""Lazy imports of the vision libraries, failing with the exact install command."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from kikimimi.engine.errors import KikimimiError

INSTALL = "pip install 'kikimimi[vision]'  (opencv-python-headless<5, dlib-bin, face-recognition-models)"
PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"


class VisionUnavailable(KikimimiError, ImportError):
    """A vision library or model file is missing; the message gives the install command."""


def cv2() -> Any:
    """The ``cv2`` module, or :class:`VisionUnavailable` with the install command."""
    try:
        import cv2 as mod
    except ImportError as e:
        raise VisionUnavailable(f"OpenCV is not installed ({e}); install it with: {INSTALL}") from e
    return mod


def dlib() -> Any:
    """The ``dlib`` module, or :class:`VisionUnavailable` with the install command."""
    try:
        import dlib as mod
    except ImportError as e:
        raise VisionUnavailable(f"dlib is not installed ({e}); install it with: {INSTALL}") from e
    return mod


def haar_cascade_path(name: str = "haarcascade_frontalface_default.xml") -> Path:
    """Path of one of OpenCV's bundled Haar cascades (``cv2.data.haarcascades``; gone in OpenCV 5)."""
    mod = cv2()
    folder = getattr(getattr(mod, "data", None), "haarcascades", None)
    path = Path(folder) / name if folder else None
    if path is None or not path.is_file():
        raise VisionUnavailable(f"OpenCV {mod.__version__} has no Haar cascade {name!r} (OpenCV 5 removed them); "
                                f"install it with: {INSTALL}")
    return path


def predictor_path(name: str = PREDICTOR_68) -> Path:
    """Path of dlib's landmark predictor inside the ``face_recognition_models`` package.

    Found through the package's import spec, without importing it: its ``__init__`` imports
    ``pkg_resources``, which new setuptools no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / "models" / name
        if path.is_file():
            return path
    raise VisionUnavailable(f"dlib's landmark model {name} was not found (face_recognition_models "
                            f"{'has no such file' if roots else 'is not installed'}); install it with: {INSTALL}")
