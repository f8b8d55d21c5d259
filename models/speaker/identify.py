"""Who is speaking: enrolled-speaker matching, online clustering of unknown voices, speaker changes.

Inputs are speaker embeddings (d-vectors) compared by cosine similarity. Every vector passed in is
checked (finite, not all zero, the expected dimension) and re-normalised, so a dot product is a cosine.
Arithmetic is float64; centroids are handed out as float32. :class:`Gallery`: enrolled speakers;
:class:`OnlineClusterer`: anonymous ``voice_N`` ids for unknown voices; :class:`Identifier`: the
per-utterance decision; :class:`ChangeDetector` / :func:`split_points`: speaker changes in an utterance.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

from kikimimi.engine.errors import ParamError

UNKNOWN = "unknown"
VOICE_PREFIX = "voice_"
NO_SCORE = -1.0                      # score reported when nothing was compared (the lowest cosine)
_RESERVED = re.compile(rf"^(?:{UNKNOWN}|{VOICE_PREFIX}\d+)$")


def _rows(x: object, what: str, dim: int | None) -> np.ndarray:
    """``x`` as unit rows, float64 of shape (n, dim); a 1-D vector is one row. Raises ParamError."""
    a = np.asarray(x, dtype=np.float64)
    a = a[None, :] if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ParamError(f"{what} has shape {np.shape(x)}; allowed: (dim,) or (n, dim) with n, dim >= 1")
    if dim is not None and a.shape[1] != dim:
        raise ParamError(f"{what} has dimension {a.shape[1]}; allowed: {dim}")
    if not np.all(np.isfinite(a)):
        raise ParamError(f"{what} holds NaN or infinite values; allowed: finite numbers")
    if np.any((norms := np.linalg.norm(a, axis=1, keepdims=True)) <= 1e-12):
        raise ParamError(f"{what} holds an all-zero vector; allowed: vectors of non-zero length")
    return a / norms


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-300)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return min(1.0, max(-1.0, float(a @ b)))


def _similarity(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not -1.0 <= float(value) <= 1.0:
        raise ParamError(f"{name}={value!r} is not allowed; allowed: a cosine similarity in [-1, 1]")
    return float(value)


def _count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ParamError(f"{name}={value!r} is not allowed; allowed: an integer >= {low}")
    return int(value)


class Gallery:
    """Enrolled speakers: name -> centroid, the unit mean of that speaker's unit enrollment embeddings.

    The sum and count of each speaker's embeddings are kept, so :meth:`add` updates a centroid exactly
    as if all embeddings had been given at once. At most ``max_speakers`` names (adding one more raises
    ParamError, nothing is forgotten silently). ``dim`` is fixed by the first embedding when not given.
    Names ``"unknown"`` and ``voice_<digits>`` are reserved for :class:`Identifier`'s answers.
    """

    def __init__(self, dim: int | None = None, max_speakers: int = 1000) -> None:
        self.dim = None if dim is None else _count("dim", dim, 1)
        self.max_speakers = _count("max_speakers", max_speakers, 1)
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._matrix: np.ndarray | None = None           # (n, dim) centroids in names order; None = stale

    @classmethod
    def from_vectors(cls, vectors: Mapping[str, np.ndarray], max_speakers: int = 1000) -> Gallery:
        """A gallery enrolling each name with its (n_i, dim) (or (dim,)) embeddings, in mapping order."""
        gallery = cls(max_speakers=max_speakers)
        for name, vecs in vectors.items():
            gallery.add(name, vecs)
        return gallery

    def add(self, name: str, vectors: np.ndarray) -> None:
        """Enroll ``name`` with (n, dim) or (dim,) embeddings, or add them to its existing enrollment."""
        if not isinstance(name, str) or not name.strip() or _RESERVED.match(name):
            raise ParamError(f"speaker name {name!r} is not allowed; allowed: a non-empty string other than "
                             f"{UNKNOWN!r} and {VOICE_PREFIX}<digits>")
        if name not in self._sums and len(self._sums) >= self.max_speakers:
            raise ParamError(f"cannot enroll {name!r}: the gallery holds max_speakers={self.max_speakers} names")
        rows = _rows(vectors, f"enrollment embeddings of {name!r}", self.dim)
        self.dim = rows.shape[1]
        self._sums[name] = self._sums.get(name, 0.0) + rows.sum(axis=0)
        self._counts[name] = self._counts.get(name, 0) + rows.shape[0]
        self._matrix = None

    def _known(self, name: str) -> str:
        if name not in self._sums:
            raise ParamError(f"speaker {name!r} is not enrolled; enrolled: {list(self._sums)}")
        return name

    def remove(self, name: str) -> None:
        """Forget ``name``; ParamError when it is not enrolled."""
        del self._sums[self._known(name)], self._counts[name]
        self._matrix = None

    @property
    def names(self) -> tuple[str, ...]:
        """Enrolled names, in enrollment order."""
        return tuple(self._sums)

    def count(self, name: str) -> int:
        """Number of embeddings enrolled for ``name`` (0 when not enrolled)."""
        return self._counts.get(name, 0)

    def centroid(self, name: str) -> np.ndarray:
        """Unit centroid of ``name``, float32 copy; ParamError when not enrolled."""
        return _unit(self._sums[self._known(name)]).astype(np.float32)

    def __len__(self) -> int:
        return len(self._sums)

    def _sims(self, vec: np.ndarray) -> np.ndarray:
        if self._matrix is None:
            self._matrix = np.stack([_unit(s) for s in self._sums.values()])
        return np.clip(self._matrix @ _rows(vec, "embedding", self.dim)[0], -1.0, 1.0)

    def scores(self, vec: np.ndarray) -> dict[str, float]:
        """Cosine similarity of ``vec`` to every enrolled centroid, in enrollment order."""
        if not self._sums:
            return {}
        return {name: float(s) for name, s in zip(self._sums, self._sims(vec), strict=True)}

    def best(self, vec: np.ndarray) -> tuple[str | None, float]:
        """The enrolled name most similar to ``vec`` and its cosine; ``(None, -1.0)`` when empty."""
        if not self._sums:
            return None, NO_SCORE
        sims = self._sims(vec)
        return self.names[int(np.argmax(sims))], float(sims.max())


class OnlineClusterer:
    """Anonymous voices of one session: each embedding joins its most similar cluster or starts one.

    ``assign`` joins the most similar centroid when the cosine is >= ``new_threshold`` (the centroid
    becomes the unit weighted mean of its members), else starts ``voice_<N>`` with the next N (ids are
    never reused in a session). After an update, while the updated centroid has a cosine above
    ``merge_threshold`` (strictly) to another one, the two merge: the older id (smaller N) survives
    with the summed weights and the other becomes an alias of it (``merge_threshold=1`` never merges).
    At most ``max_clusters`` live clusters: starting one more forgets the least recently assigned one
    (counted in ``forgotten``). ``aliases`` (merged id -> survivor) holds at most ``max_aliases``
    entries, the oldest dropped first; aliases of a forgotten cluster are dropped with it.
    """

    def __init__(self, new_threshold: float, merge_threshold: float | None = None, max_clusters: int = 64,
                 max_aliases: int = 1024) -> None:
        self.new_threshold = _similarity("new_threshold", new_threshold)
        if merge_threshold is None:
            merge_threshold = max(self.new_threshold, min(self.new_threshold + 0.1, 0.95))
        self.merge_threshold = _similarity("merge_threshold", merge_threshold)
        if self.merge_threshold < self.new_threshold:
            raise ParamError(f"merge_threshold={merge_threshold!r} is not allowed; allowed: >= new_threshold="
                             f"{self.new_threshold}")
        self.max_clusters = _count("max_clusters", max_clusters, 1)
        self.max_aliases = _count("max_aliases", max_aliases, 0)
        self.reset()

    def reset(self) -> None:
        """Start a new session: no clusters, no aliases, ids from voice_1 again, counters at 0."""
        self.dim: int | None = None
        self._totals: OrderedDict[str, np.ndarray] = OrderedDict()   # id -> weighted sum of unit vectors, LRU first
        self.aliases: dict[str, str] = {}
        self.issued = 0              # ids handed out so far (the last N)
        self.forgotten = 0           # clusters dropped by the max_clusters cap
        self.merged = 0              # clusters merged into an older one

    def __len__(self) -> int:
        return len(self._totals)

    @property
    def ids(self) -> tuple[str, ...]:
        """Live cluster ids, least recently assigned first."""
        return tuple(self._totals)

    def resolve(self, voice: str) -> str | None:
        """The live id ``voice`` now stands for: itself, the survivor it merged into, or None (forgotten,
        alias dropped by the cap, or never issued)."""
        return voice if voice in self._totals else self.aliases.get(voice)

    def _best(self, unit: np.ndarray, skip: str | None = None) -> tuple[str | None, float]:
        sims = {cid: _cos(_unit(total), unit) for cid, total in self._totals.items() if cid != skip}
        best = max(sims, key=sims.__getitem__, default=None)
        return (None, NO_SCORE) if best is None else (best, sims[best])

    def peek(self, vec: np.ndarray) -> tuple[str | None, float]:
        """The most similar live cluster and its cosine, changing nothing; ``(None, -1.0)`` when empty."""
        return self._best(_rows(vec, "embedding", self.dim)[0])

    def assign(self, vec: np.ndarray, weight: float = 1.0) -> tuple[str, float]:
        """Add ``vec`` with ``weight`` (> 0) and return (id, cosine): the id of the cluster it ended in
        (after merges) and its cosine to the joined centroid before the update (1.0 for a new cluster)."""
        if isinstance(weight, bool) or not isinstance(weight, Real) or not 0 < weight < math.inf:
            raise ParamError(f"weight={weight!r} is not allowed; allowed: a finite number > 0")
        unit = _rows(vec, "embedding", self.dim)[0]
        self.dim = unit.shape[0]
        cid, sim = self._best(unit)
        if cid is None or sim < self.new_threshold:
            if len(self._totals) >= self.max_clusters:
                self._forget(next(iter(self._totals)))
            self.issued += 1
            cid, sim = f"{VOICE_PREFIX}{self.issued}", 1.0
            self._totals[cid] = unit * float(weight)
        else:
            self._totals[cid] = self._totals[cid] + unit * float(weight)
            self._totals.move_to_end(cid)
        return self._merge(cid), sim

    def _merge(self, cid: str) -> str:
        """Merge ``cid`` with any cluster above merge_threshold, repeatedly; returns the final survivor."""
        while len(self._totals) > 1:
            other, sim = self._best(_unit(self._totals[cid]), skip=cid)
            if other is None or sim <= self.merge_threshold:
                break
            keep, drop = sorted((cid, other), key=lambda c: int(c[len(VOICE_PREFIX):]))
            self._totals[keep] = self._totals[keep] + self._totals.pop(drop)
            self._totals.move_to_end(keep)
            self.aliases = {a: keep if t == drop else t for a, t in self.aliases.items() if a != drop}
            self.aliases[drop] = keep
            while len(self.aliases) > self.max_aliases:
                del self.aliases[next(iter(self.aliases))]
            self.merged += 1
            cid = keep
        return cid

    def _forget(self, cid: str) -> None:
        del self._totals[cid]
        self.aliases = {a: t for a, t in self.aliases.items() if t != cid}
        self.forgotten += 1


@dataclass(frozen=True, slots=True)
class Identity:
    """An utterance's speaker: an enrolled name (``enrolled=True``), a ``voice_N`` or ``"unknown"``; ``score``
    is the cosine to the enrolled centroid, to the voice cluster (see :meth:`OnlineClusterer.assign`), or for
    ``"unknown"`` the best enrolled cosine (-1.0: empty gallery, or too little speech to compare)."""

    speaker: str
    score: float
    enrolled: bool


class Identifier:
    """The per-utterance decision: enrolled speaker, else an anonymous session voice, else unknown.

    Defaults: ``new_threshold`` = ``threshold``; ``merge_threshold`` = min(threshold + 0.1, 0.95),
    raised to ``new_threshold`` when that is higher. Each utterance joins its voice cluster with weight
    ``n_windows``, so longer utterances move a centroid more. ``gallery`` is used by reference: names
    enrolled into it later are matched from then on.
    """

    def __init__(self, gallery: Gallery | None, threshold: float, cluster_unknown: bool = True,
                 new_threshold: float | None = None, merge_threshold: float | None = None,
                 min_windows: int = 1, max_clusters: int = 64) -> None:
        self.gallery = Gallery() if gallery is None else gallery
        self.threshold = _similarity("threshold", threshold)
        new = self.threshold if new_threshold is None else _similarity("new_threshold", new_threshold)
        merge = max(new, min(self.threshold + 0.1, 0.95)) if merge_threshold is None else merge_threshold
        self.clusterer = OnlineClusterer(new, merge, max_clusters)
        self.cluster_unknown = bool(cluster_unknown)
        self.min_windows = _count("min_windows", min_windows, 0)

    def reset(self) -> None:
        """New session: forget the anonymous voices (the gallery stays)."""
        self.clusterer.reset()

    def identify(self, utterance_vec: np.ndarray | None, n_windows: int) -> Identity:
        """Decide the speaker of one utterance from its embedding and its number of windows.

        ``n_windows < min_windows``: ``"unknown"`` with score -1.0, the vector is not looked at (it may be
        None) and the clusters are untouched. Else the best enrolled centroid at >= ``threshold`` wins;
        else ``voice_N`` from the clusterer when ``cluster_unknown``, or ``"unknown"``."""
        n = _count("n_windows", n_windows, 0)
        if n < self.min_windows:
            return Identity(UNKNOWN, NO_SCORE, False)
        unit = _rows(utterance_vec, "utterance embedding", self.gallery.dim)[0]
        name, score = self.gallery.best(unit)
        if name is not None and score >= self.threshold:
            return Identity(name, score, True)
        if not self.cluster_unknown:
            return Identity(UNKNOWN, score, False)
        voice, sim = self.clusterer.assign(unit, weight=float(max(n, 1)))
        return Identity(voice, sim, False)


class Segment(NamedTuple):
    """One speaker's stretch ``[start, end)`` of an utterance (samples) and the unit mean of its windows."""

    start: int
    end: int
    vector: np.ndarray


class ChangeDetector:
    """Speaker changes inside an utterance, from its window embeddings pushed in order.

    Rule: the segment's windows except the last ``k`` form its reference (unit mean); once it holds at
    least ``k`` windows, each push compares the unit mean of the last ``k`` windows with it. A change is
    declared when the cosine is below ``change_threshold`` (default ``threshold - 0.05``) for
    ``patience`` consecutive windows; windows of such a failing run stay out of the reference (they
    join it once a window passes again). The change point is the **start sample of the first new
    window**: the first window, among those not in the reference, whose own cosine to the reference
    is below ``change_threshold`` (the oldest of them when none is). Windows before it close the old
    segment, which ends at the change point (segments do not overlap); the rest open the new one.
    Bounded: at most ``k + patience - 1`` windows are held, and the ``max_segments`` newest closed
    segments are kept (older ones are dropped, counted in ``dropped``).
    """

    def __init__(self, threshold: float, change_threshold: float | None = None, k: int = 2, patience: int = 2,
                 max_segments: int = 256) -> None:
        self.threshold = _similarity("threshold", threshold)
        self.change_threshold = _similarity(
            "change_threshold", max(-1.0, self.threshold - 0.05) if change_threshold is None else change_threshold)
        self.k = _count("k", k, 1)
        self.patience = _count("patience", patience, 1)
        self.max_segments = _count("max_segments", max_segments, 1)
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new utterance)."""
        self.dim: int | None = None
        self.dropped = 0
        self._closed: deque[Segment] = deque(maxlen=self.max_segments)
        self._tail: deque[tuple[np.ndarray, int]] = deque()   # (unit vector, start) of windows not in the ref
        self._ref_sum: np.ndarray | float = 0.0
        self._ref_n = self._fails = 0
        self._seg_start = self._last_start = self._end = -1   # -1: nothing pushed yet

    def _absorb_excess(self) -> None:
        while len(self._tail) > self.k:
            self._ref_sum = self._ref_sum + self._tail.popleft()[0]
            self._ref_n += 1

    def push(self, vec: np.ndarray, start_sample: int, end_sample: int) -> int | None:
        """Add the window ``[start_sample, end_sample)`` with embedding ``vec``; returns the change point
        (a sample index) when this window completes a change, else None. Window starts must increase."""
        start, end = _count("start_sample", start_sample, 0), _count("end_sample", end_sample, 0)
        if end <= start or start <= self._last_start:
            raise ParamError(f"window span ({start}, {end}) is not allowed; allowed: start < end, and start > "
                             f"the previous window start {max(self._last_start, 0)}")
        unit = _rows(vec, "window embedding", self.dim)[0]
        self.dim = unit.shape[0]
        if self._seg_start < 0:
            self._seg_start = start
        self._last_start, self._end = start, max(end, self._end)
        self._tail.append((unit, start))
        if self._fails == 0:
            self._absorb_excess()
        if self._ref_n < self.k:
            return None
        ref = _unit(np.asarray(self._ref_sum))
        if _cos(_unit(sum(v for v, _ in list(self._tail)[-self.k:])), ref) >= self.change_threshold:
            self._fails = 0
            self._absorb_excess()
            return None
        self._fails += 1
        if self._fails < self.patience:
            return None
        held = list(self._tail)
        cut = next((i for i, (v, _) in enumerate(held) if _cos(v, ref) < self.change_threshold), 0)
        point = held[cut][1]
        old = self._ref_sum + sum(v for v, _ in held[:cut])
        self.dropped += len(self._closed) == self.max_segments
        self._closed.append(Segment(self._seg_start, point, _unit(old).astype(np.float32)))
        self._tail = deque(held[cut:])
        self._ref_sum, self._ref_n, self._fails, self._seg_start = 0.0, 0, 0, point
        self._absorb_excess()
        return point

    def segments(self) -> list[Segment]:
        """Closed segments (the newest ``max_segments``) and then the open one, which ends at the end of
        the last window pushed; empty before the first push."""
        if self._seg_start < 0:
            return []
        total = self._ref_sum + sum(v for v, _ in self._tail)
        return [*self._closed, Segment(self._seg_start, self._end, _unit(np.asarray(total)).astype(np.float32))]


def split_points(vecs: np.ndarray | Sequence[np.ndarray], spans: Sequence[tuple[int, int]], threshold: float,
                 change_threshold: float | None = None, k: int = 2, patience: int = 2) -> list[int]:
    """Offline :class:`ChangeDetector`: the change points (samples) of windows ``vecs`` over ``spans``."""
    if len(vecs) != len(spans):
        raise ParamError(f"{len(vecs)} window embeddings but {len(spans)} spans; allowed: one span per embedding")
    detector = ChangeDetector(threshold, change_threshold, k, patience, max_segments=max(1, len(spans)))
    return [p for v, (s, e) in zip(vecs, spans, strict=True) if (p := detector.push(v, s, e)) is not None]
