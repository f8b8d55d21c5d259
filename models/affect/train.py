"""Train and evaluate a voice affect head: ``python -m kikimimi.models.affect.train``.

Reads a labelled corpus (a TSV with columns ``path`` (relative to the TSV's folder's parent chain: first the
TSV's folder, then its parents), ``actor`` (the speaker) and ``emotion``; RAVDESS's ``labels.tsv`` in
../shared/data is one), cuts each clip to its speech (the offline VAD: first onset - 0.2 s to last offset
+ 0.1 s, as an utterance reaches the live model), pools the Whisper encoder states of that span
(:mod:`~kikimimi.models.affect.voice`) and then:

1. cross-validates by speaker: ``--folds`` folds of whole actors (never a clip of a test actor in training),
   printing the unweighted accuracy (mean per-class recall) over all classes, over neutral/happy/sad/angry
   (8-way predictions) and of a head trained on those four only, with the confusion matrix;
2. fits the head on every actor except ``--holdout`` ones, reports its accuracy on those, and writes it
   (``--out``: NAME.safetensors + NAME.json with the figures, the classes and the licence given).

Weights trained on RAVDESS inherit its licence, CC BY-NC-SA 4.0: non-commercial use only.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kikimimi.models.affect.head import fit_head, head_files
from kikimimi.models.affect.labels import FOUR_CLASSES, RAVDESS_CLASSES
from kikimimi.models.affect.voice import VoiceAffectConfig, input_name, pool

RAVDESS_LICENCE = ("CC BY-NC-SA 4.0 (trained on RAVDESS, Livingstone & Russo 2018): non-commercial use only, "
                   "share alike")
LEAD_S, TAIL_S = 0.2, 0.1


def read_corpus(tsv: Path) -> list[tuple[Path, str, str]]:
    """(audio path, actor, emotion) of each row of ``tsv``; ``path`` is looked up from the TSV's folder up."""
    rows = list(csv.DictReader(tsv.open(encoding="utf-8"), delimiter="\t"))
    if not rows or not {"path", "actor", "emotion"} <= set(rows[0]):
        raise SystemExit(f"{tsv}: needs the columns path, actor, emotion (tab-separated, with a header)")
    out = []
    for r in rows:
        base = next((d for d in (tsv.parent, *tsv.parents) if (d / r["path"]).is_file()), None)
        if base is None:
            raise SystemExit(f"{tsv}: {r['path']} not found from {tsv.parent} or its parents")
        out.append((base / r["path"], r["actor"], r["emotion"]))
    return out


def speech_span(audio: np.ndarray, rate: int = 16000) -> np.ndarray:
    """``audio`` cut to its speech as the live model sees an utterance (all of it if the VAD finds none)."""
    from kikimimi.models.vad.offline import speech_spans

    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    spans = speech_spans(pcm, rate)
    if not spans:
        return audio
    return audio[max(0, spans[0][0] - int(LEAD_S * rate)):spans[-1][1] + int(TAIL_S * rate)]


def features(paths: Sequence[Path], cfg: VoiceAffectConfig, batch: int = 8) -> np.ndarray:
    """Pooled encoder states (N, 2 d) of the speech of each file."""
    from kikimimi.models.asr.whisper_ct2 import WhisperConfig, WhisperCT2
    from kikimimi.models.frontend import whisper_log10_mel
    from kikimimi.models.speaker.files import load_audio

    w = WhisperCT2(WhisperConfig(cfg.model, device=cfg.device, threads=cfg.threads))
    out: list[np.ndarray] = []
    t0 = time.perf_counter()
    for i in range(0, len(paths), batch):
        mels = [whisper_log10_mel(speech_span(load_audio(p))) for p in paths[i:i + batch]]
        out += [pool(s) for s in w.encoder_states(mels)]
        print(f"\rfeatures {len(out)}/{len(paths)} ({time.perf_counter() - t0:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    return np.stack(out)


def unweighted_accuracy(y: np.ndarray, pred: np.ndarray, labels: Sequence[int]) -> float:
    """Mean over ``labels`` of the fraction of that class's items predicted as it."""
    return float(np.mean([np.mean(pred[y == c] == c) for c in labels if np.any(y == c)]))


def cross_validate(x: np.ndarray, y: np.ndarray, actors: np.ndarray, classes: Sequence[str], folds: int,
                   l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Predictions for every item from heads that never saw its actor, and the 4-class predictions (-1 where
    the item is not one of the four)."""
    order = sorted(set(actors.tolist()))
    pred, pred4 = np.full(len(y), -1), np.full(len(y), -1)
    four = [classes.index(c) for c in FOUR_CLASSES if c in classes]
    in4 = np.isin(y, four)
    for k in range(folds):
        test = np.isin(actors, order[k::folds])
        head = fit_head(x[~test], y[~test], classes, "cv", "cv", l2=l2)
        pred[test] = head.probabilities(x[test]).argmax(axis=1)
        if len(four) == 4:
            tr4 = ~test & in4
            y4 = np.array([four.index(v) for v in y[tr4]])
            h4 = fit_head(x[tr4], y4, FOUR_CLASSES, "cv4", "cv4", l2=l2)
            pred4[test & in4] = np.array(four)[h4.probabilities(x[test & in4]).argmax(axis=1)]
    return pred, pred4


def confusion(y: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> str:
    """The confusion matrix as text: rows true class, columns predicted, row-normalised percent."""
    w = max(len(c) for c in classes)
    lines = [" " * (w + 1) + " ".join(f"{c[:5]:>5}" for c in classes)]
    for i, c in enumerate(classes):
        n = max(1, int(np.sum(y == i)))
        lines.append(f"{c:>{w}} " + " ".join(f"{100 * np.sum((y == i) & (pred == j)) / n:5.0f}"
                                             for j in range(len(classes))))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kikimimi.models.affect.train", description=__doc__.split("\n")[0])
    ap.add_argument("--labels", default="../shared/data/emotion/ravdess/labels.tsv", help="the corpus TSV")
    ap.add_argument("--model", default="base", help="Whisper model whose encoder states are used (base, tiny.en)")
    ap.add_argument("--folds", type=int, default=5, help="cross-validation folds of whole actors")
    ap.add_argument("--holdout", default="17,18,19,20", help="actors left out of the written head (comma-separated)")
    ap.add_argument("--l2", type=float, default=0.01, help="weight decay of the logistic regression")
    ap.add_argument("--licence", default=RAVDESS_LICENCE, help="licence written into the head's JSON")
    ap.add_argument("--out", help="write the head here (NAME, without suffix); default: print only")
    ap.add_argument("--cache", help="an .npz to keep the features in (read if it exists)")
    args = ap.parse_args(argv)

    corpus = read_corpus(Path(args.labels))
    classes = [c for c in RAVDESS_CLASSES if any(e == c for _, _, e in corpus)] + \
        sorted({e for _, _, e in corpus} - set(RAVDESS_CLASSES))
    y = np.array([classes.index(e) for _, _, e in corpus])
    actors = np.array([a for _, a, _ in corpus])
    cfg = VoiceAffectConfig(model=args.model, threads=0)
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        x = np.load(cache)["x"]
    else:
        x = features([p for p, _, _ in corpus], cfg)
        if cache is not None:
            np.savez(cache, x=x)
    pred, pred4 = cross_validate(x, y, actors, classes, args.folds, args.l2)
    four = [classes.index(c) for c in FOUR_CLASSES if c in classes]
    ua = unweighted_accuracy(y, pred, range(len(classes)))
    ua4_of8 = unweighted_accuracy(y, pred, four)
    ua4 = unweighted_accuracy(y[pred4 >= 0], pred4[pred4 >= 0], four) if np.any(pred4 >= 0) else float("nan")
    print(f"{len(corpus)} clips, {len(set(actors.tolist()))} actors, {args.folds} folds by actor, "
          f"whisper-{args.model} states")
    print(f"unweighted accuracy, {len(classes)} classes: {ua:.3f} (chance {1 / len(classes):.3f})")
    print(f"unweighted accuracy over {'/'.join(FOUR_CLASSES)}: of the {len(classes)}-way predictions "
          f"{ua4_of8:.3f}; a 4-class head {ua4:.3f} (chance 0.250)")
    print(confusion(y, pred, classes))
    hold = np.isin(actors, [a.strip() for a in args.holdout.split(",") if a.strip()])
    head = fit_head(x[~hold], y[~hold], classes, "", "", l2=args.l2)
    figures = {"cv_folds": args.folds, "cv_unweighted_accuracy": round(ua, 4),
               "cv_unweighted_accuracy_4_of_8": round(ua4_of8, 4), "cv_unweighted_accuracy_4_class": round(ua4, 4)}
    if np.any(hold):
        uah = unweighted_accuracy(y[hold], head.probabilities(x[hold]).argmax(axis=1), range(len(classes)))
        figures |= {"holdout_actors": args.holdout, "holdout_unweighted_accuracy": round(uah, 4)}
        print(f"head trained without actors {args.holdout}: unweighted accuracy on them {uah:.3f}")
    if args.out:
        out = Path(args.out)
        name = input_name(args.model)
        head = type(head)(out.name, tuple(classes), name, head.weight, head.bias, head.mean, head.scale,
                          meta={"licence": args.licence, "trained_on": f"{Path(args.labels)} without actors "
                                f"{args.holdout}", "l2": args.l2, **figures})
        head.save(out)
        js, ts = head_files(out)
        print(f"wrote {ts} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
