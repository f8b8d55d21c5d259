"""``kikimimi speakers``: the enrollment database from the command line.

    kikimimi speakers enroll NAME FILE... [--db PATH] [--encoder ge2e|PATH]
    kikimimi speakers list [--db PATH]
    kikimimi speakers remove NAME [--db PATH]
    kikimimi speakers verify FILE1 FILE2 [--db PATH] [--encoder ge2e|PATH] [--threshold X]
                                    # exit status: 0 match, 1 no match, 2 error
    kikimimi speakers calibrate MANIFEST.tsv|DIR [--speakers A,B,...] [--max-files N] [--db PATH] [--encoder ...]

Every file is embedded over its speech (two-stage VAD, then the encoder's sliding windows:
:func:`~kikimimi.models.speaker.files.speech_embedding`), one embedding per file. The database is
``--db``, else ``$KIKIMIMI_SPEAKERS_DB``, else ``~/.local/share/kikimimi/speakers.sqlite3``; ``list``,
``remove`` and ``verify`` never create it. The threshold a verification (or the live identifier) uses
is the one ``calibrate`` stored for the encoder's id, else the encoder's default.

``calibrate`` reads labelled files, either a TSV with ``path`` and ``speaker_id`` columns (paths relative
to the TSV's folder; rows are skipped that have no speaker id, an ``unknown (...)`` one, several ids
(``A,B``: a mixture) or a file that is not audio or video) or a folder laid out as
``DIR/<speaker>/.../<files>``; it scores every same-speaker and different-speaker pair of files by cosine
and stores the equal-error-rate threshold.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.engine.errors import KikimimiError, ParamError

log = logging.getLogger(__name__)

AV_EXTENSIONS = (".mp4", ".mpg", ".mkv", ".webm", ".avi", ".mov")
UNLABELLED = ("", "unknown", "?", "-")
"""Manifest speaker ids (without notes in parentheses) that do not name a speaker."""
THREADS = 1
"""Encoder threads by default: a few files need no more, and several threads on a busy CPU are slower."""
VERIFY_MATCH, VERIFY_NO_MATCH = 0, 1
"""``speakers verify`` exit status (an error exits 2, as every ``kikimimi`` error does)."""


# ---------------------------------------------------------------------------------------------- helpers
def _db_path(args: argparse.Namespace) -> Path:
    from kikimimi.models.speaker.db import default_db_path

    return Path(args.db).expanduser() if args.db else default_db_path()


def _open_db(args: argparse.Namespace, create: bool = True) -> Any:
    """The database of ``--db`` (or the default); None if it does not exist and ``create`` is false."""
    from kikimimi.models.speaker.db import SpeakerDB

    path = _db_path(args)
    if not create and not path.exists():
        return None
    return SpeakerDB(path)


def _encoder(args: argparse.Namespace) -> Any:
    from kikimimi.models.speaker.encoder import load_encoder

    return load_encoder(args.encoder, args.device, args.threads)


def _embed(encoder: Any, path: str) -> tuple[np.ndarray, float]:
    """The unit embedding of the speech in ``path`` and its seconds of speech; KikimimiError if too short."""
    from kikimimi.models.speaker.files import speech_embedding

    emb, seconds = speech_embedding(encoder, path)
    if emb.vector is None:
        raise KikimimiError(f"{path}: too short to embed ({seconds:.2f} s; the encoder {encoder.id} needs at "
                            f"least {encoder.min_window_s:g} s of audio)")
    return emb.vector, seconds


def _num(x: float) -> str:
    """A threshold for people: up to 4 decimals, trailing zeros dropped (0.75, 0.7123)."""
    return f"{x:.4f}".rstrip("0").rstrip(".")


def default_threshold_of(encoder_id: str) -> float | None:
    """The default threshold of the encoder family an id names (``ge2e-...``), None if not known."""
    if encoder_id.startswith("ge2e-"):
        from kikimimi.models.speaker.ge2e import Ge2eEncoder

        return float(Ge2eEncoder.default_threshold)
    return None


def resolve_threshold(db: Any, encoder: Any, given: float | None = None) -> tuple[float, str]:
    """The verification threshold and where it came from: ``given`` (--threshold), the calibrated one
    stored for the encoder id in ``db`` (may be None), else the encoder's default."""
    if given is not None:
        return given, "given with --threshold"
    if db is not None:
        info = next((e for e in db.encoders() if e.id == encoder.id and e.threshold is not None), None)
        if info is not None:
            where = f"calibrated on {info.calibrated_on}" if info.calibrated_on else "calibrated"
            if info.eer is not None:
                where += f", EER {100 * info.eer:.2f}%"
            return info.threshold, where
    return float(encoder.default_threshold), "encoder default"


def _threshold_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; allowed: a cosine in [-1, 1]") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed; allowed: a cosine in [-1, 1]")
    return value


def _print_table(rows: Sequence[Sequence[str]], out: Any) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


# ---------------------------------------------------------------------------------------------- labelled files
def _media_extensions() -> set[str]:
    import soundfile as sf

    return {f".{f.lower()}" for f in sf.available_formats()} | {".wav", ".aif", ".oga", ".opus"} | set(AV_EXTENSIONS)


def label_keys(label: str) -> set[str]:
    """The names ``--speakers`` may use for a speaker id: ``librispeech:1688 (M)``, ``librispeech:1688``
    and ``1688`` all name the same one."""
    short = re.sub(r"\s*\(.*\)\s*$", "", label).strip()
    return {label, short, short.rsplit(":", 1)[-1].strip()}


def labelled_files(source: str | Path, max_files: int | None = None) -> list[tuple[str, str]]:
    """(path, speaker id) of the labelled audio files of a manifest TSV or a ``DIR/<speaker>/`` folder, in
    file order; at most ``max_files`` per speaker (the first ones)."""
    src = Path(source)
    media = _media_extensions()
    pairs: list[tuple[str, str]] = []
    if src.is_dir():
        for spk in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
            pairs += [(str(f), spk.name) for f in sorted(spk.rglob("*"))
                      if f.is_file() and f.suffix.lower() in media]
    elif src.is_file():
        with open(src, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            missing = {"path", "speaker_id"} - set(reader.fieldnames or ())
            if missing:
                raise KikimimiError(f"{src}: the manifest has no {', '.join(sorted(missing))} column; allowed: a "
                                    f"tab-separated file with 'path' and 'speaker_id' columns, or a folder "
                                    f"DIR/<speaker>/<files>")
            for row in reader:
                label = (row.get("speaker_id") or "").strip()
                path = (row.get("path") or "").strip()
                if not label or not path:
                    continue
                bare = re.sub(r"\(.*?\)", "", label).strip()   # without its notes in parentheses
                if "," in bare:
                    log.info("%s: skipping %s: several speakers (%s)", src, path, label)
                    continue
                if bare.lower() in UNLABELLED:
                    log.info("%s: skipping %s: speaker not known (%s)", src, path, label)
                    continue
                if Path(path).suffix.lower() not in media:
                    log.info("%s: skipping %s: not an audio or video file", src, path)
                    continue
                pairs.append((str(src.parent / path), label))
    else:
        raise KikimimiError(f"calibration source {src} is neither a manifest file nor a folder")
    if max_files is not None:
        kept: dict[str, int] = {}
        out = []
        for path, label in pairs:
            if kept.get(label, 0) < max_files:
                kept[label] = kept.get(label, 0) + 1
                out.append((path, label))
        pairs = out
    return pairs


def select_speakers(pairs: list[tuple[str, str]], wanted: str | None) -> list[tuple[str, str]]:
    """The pairs of the speakers named in ``wanted`` (comma-separated, see :func:`label_keys`)."""
    if not wanted:
        return pairs
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    labels = sorted({label for _, label in pairs})
    chosen: set[str] = set()
    for name in names:
        hits = {label for label in labels if name in label_keys(label)}
        if not hits:
            raise ParamError(f"--speakers: no speaker {name!r} in the calibration files; allowed: "
                             f"{', '.join(labels) or '(none)'}")
        chosen |= hits
    return [(p, label) for p, label in pairs if label in chosen]


def pair_scores(vectors: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of every same-speaker and every different-speaker pair of unit ``vectors``."""
    v = np.asarray(vectors, np.float64)
    scores = np.clip(v @ v.T, -1.0, 1.0)
    lab = np.asarray(labels, dtype=object)
    i, j = np.triu_indices(len(lab), k=1)
    same = lab[i] == lab[j]
    return scores[i, j][same], scores[i, j][~same]


# ---------------------------------------------------------------------------------------------- commands
def cmd_enroll(args: argparse.Namespace) -> int:
    from kikimimi.models.speaker.db import check_name

    check_name(args.name)
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        raise KikimimiError(f"no such file: {', '.join(missing)}")
    db = _open_db(args)
    encoder = _encoder(args)
    vectors, seconds = [], []
    for f in args.files:
        vec, secs = _embed(encoder, f)
        vectors.append(vec)
        seconds.append(secs)
    db.enroll(args.name, encoder.id, np.stack(vectors), [str(Path(f).resolve()) for f in args.files], seconds)
    info = next(s for s in db.speakers(encoder.id) if s.name == args.name)
    print(f"enrolled {args.name!r} with {len(args.files)} embedding{'s' * (len(args.files) != 1)} "
          f"(encoder {encoder.id}) in {db.path}")
    for f, secs in zip(args.files, seconds, strict=True):
        print(f"  {f}: {secs:.2f} s of speech")
    print(f"{args.name!r} now has {info.n_embeddings} embedding{'s' * (info.n_embeddings != 1)}, "
          f"{info.seconds:.1f} s of speech")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    db = _open_db(args, create=False)
    if db is None:
        print(f"no speakers enrolled (no database at {_db_path(args)})")
        return 0
    speakers = db.speakers()
    if speakers:
        rows = [("NAME", "EMBEDDINGS", "SECONDS", "ENCODERS")]
        rows += [(s.name, str(s.n_embeddings), f"{s.seconds:.1f}", ",".join(s.encoders) or "-") for s in speakers]
        _print_table(rows, sys.stdout)
    else:
        print(f"no speakers enrolled in {db.path}")
    encoders = db.encoders()
    if encoders:
        print()
        rows = [("ENCODER", "DIM", "THRESHOLD", "SOURCE")]
        for e in encoders:
            if e.threshold is not None:
                source = f"calibrated on {e.calibrated_on}" if e.calibrated_on else "calibrated"
                if e.eer is not None:
                    source += f", EER {100 * e.eer:.2f}%"
                rows.append((e.id, str(e.dim), _num(e.threshold), source))
            else:
                default = default_threshold_of(e.id)
                rows.append((e.id, str(e.dim), "-" if default is None else _num(default), "encoder default"))
        _print_table(rows, sys.stdout)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    db = _open_db(args, create=False)
    if db is None or not db.remove(args.name):
        where = _db_path(args) if db is None else db.path
        print(f"kikimimi: error: {args.name!r} is not enrolled in {where}", file=sys.stderr)
        return 1
    print(f"removed {args.name!r} from {db.path}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Print the two files' similarity and "match" / "no match"; exit status 0 match, 1 no match (2: an error,
    from ``kikimimi``'s main), so a script can test it as ``if kikimimi speakers verify a b; then``."""
    missing = [f for f in (args.file1, args.file2) if not Path(f).is_file()]
    if missing:
        raise KikimimiError(f"no such file: {', '.join(missing)}")
    db = _open_db(args, create=False) if args.threshold is None else None
    encoder = _encoder(args)
    a, _ = _embed(encoder, args.file1)
    b, _ = _embed(encoder, args.file2)
    similarity = float(np.clip(np.dot(a.astype(np.float64), b.astype(np.float64)), -1.0, 1.0))
    threshold, where = resolve_threshold(db, encoder, args.threshold)
    match = similarity >= threshold
    print(f"similarity {similarity:.4f}")
    print("match" if match else "no match")
    print(f"(threshold {_num(threshold)}, {where})")
    return VERIFY_MATCH if match else VERIFY_NO_MATCH


def cmd_calibrate(args: argparse.Namespace) -> int:
    from kikimimi.models.speaker.calibrate import eer

    if args.max_files is not None and args.max_files < 2:
        raise ParamError(f"--max-files {args.max_files} is not allowed; allowed: 2 or more (same-speaker pairs)")
    pairs = select_speakers(labelled_files(args.source, args.max_files), args.speakers)
    labels = [label for _, label in pairs]
    if len(set(labels)) < 2:
        raise KikimimiError(f"{args.source}: calibration needs files of at least 2 speakers; found "
                            f"{len(set(labels))} speaker(s) in {len(pairs)} file(s)")
    missing = [p for p, _ in pairs if not Path(p).is_file()]
    if missing:
        raise KikimimiError(f"{args.source}: {len(missing)} listed file(s) not found, e.g. {missing[0]}")
    db = _open_db(args)
    encoder = _encoder(args)
    vectors = []
    for k, (path, label) in enumerate(pairs, 1):
        vec, secs = _embed(encoder, path)
        vectors.append(vec)
        log.info("calibrate: %d/%d %s (%s): %.2f s of speech", k, len(pairs), path, label, secs)
    same, different = pair_scores(np.stack(vectors), labels)
    if same.size == 0:
        raise KikimimiError(f"{args.source}: no speaker has 2 or more files, so there is no same-speaker pair")
    rate, threshold = eer(same, different)
    n_spk = len(set(labels))
    calibrated_on = (f"{args.source} ({n_spk} speakers, {len(pairs)} files, {same.size} same / "
                     f"{different.size} different pairs)")
    db.set_threshold(encoder.id, encoder.dim, threshold, calibrated_on, rate)
    print(f"EER {100 * rate:.2f}% at threshold {threshold:.3f} over {same.size} same / {different.size} "
          f"different pairs")
    print(f"stored for encoder {encoder.id} in {db.path} ({n_spk} speakers, {len(pairs)} files)")
    return 0


# ---------------------------------------------------------------------------------------------- parser
def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``speakers`` and its subcommands to the ``kikimimi`` subparsers ``sub``."""
    sp = sub.add_parser("speakers", help="enroll, list, remove and verify speakers; calibrate the threshold",
                        description="The speaker enrollment database (--db, else $KIKIMIMI_SPEAKERS_DB, else "
                                    "~/.local/share/kikimimi/speakers.sqlite3).")
    cmds = sp.add_subparsers(dest="speakers_command", required=True, metavar="{enroll,list,remove,verify,calibrate}")

    def common(p: argparse.ArgumentParser, encoder: bool) -> None:
        p.add_argument("--db", metavar="PATH",
                       help="enrollment database (default: $KIKIMIMI_SPEAKERS_DB or "
                            "~/.local/share/kikimimi/speakers.sqlite3)")
        if encoder:
            p.add_argument("--encoder", default="ge2e", metavar="ge2e|PATH",
                           help="speaker encoder: ge2e (default), a GE2E .pt checkpoint or an encoder folder")
            p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                           help="where the encoder runs (default: auto)")
            p.add_argument("--threads", type=int, default=THREADS,
                           help=f"encoder CPU threads (default: {THREADS}; 0 = the library's default)")

    p = cmds.add_parser("enroll", help="enroll NAME from audio files (one embedding per file)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio or video files of NAME speaking")
    common(p, True)
    p.set_defaults(func=cmd_enroll)

    p = cmds.add_parser("list", help="enrolled speakers and the encoders' thresholds")
    common(p, False)
    p.set_defaults(func=cmd_list)

    p = cmds.add_parser("remove", help="forget NAME and its embeddings (exit 1 if not enrolled)")
    p.add_argument("name", metavar="NAME")
    common(p, False)
    p.set_defaults(func=cmd_remove)

    p = cmds.add_parser("verify", help="are two files the same speaker? (similarity, match / no match; exit "
                                       "status 0 match, 1 no match, 2 error)",
                        description="Print the similarity of the two files' voices and 'match' or 'no match'. "
                                    "Exit status: 0 match, 1 no match, 2 error.")
    p.add_argument("file1", metavar="FILE1")
    p.add_argument("file2", metavar="FILE2")
    p.add_argument("--threshold", type=_threshold_arg, metavar="X",
                   help="decide with this cosine (default: the calibrated one, else the encoder's default)")
    common(p, True)
    p.set_defaults(func=cmd_verify)

    p = cmds.add_parser("calibrate", help="set the threshold at the EER of labelled files",
                        description="Embed labelled files, score every same- and different-speaker pair and "
                                    "store the threshold at the equal error rate for the encoder.")
    p.add_argument("source", metavar="MANIFEST_OR_DIR",
                   help="TSV with path and speaker_id columns (paths relative to it), or DIR/<speaker>/<files>")
    p.add_argument("--speakers", metavar="A,B,...",
                   help="only these speakers (an id such as 'librispeech:1688 (M)', or 'librispeech:1688' or '1688')")
    p.add_argument("--max-files", type=int, metavar="N", help="at most the first N files of each speaker")
    common(p, True)
    p.set_defaults(func=cmd_calibrate)
    return sp
