"""Words from a CTranslate2 Whisper alignment, and times moved past a window's lead silence."""

from __future__ import annotations

from typing import Any

import numpy as np

from kikimimi.models.asr.whisper_config import AlignedWord, WhisperOutput

FRAMES_PER_SECOND = 100
_TRAILING_PUNCT = set(".,!?:;\"')]}、。」』】…\uff0c\uff0e\uff01\uff1f\uff1a\uff1b\uff09")  # + fullwidth


def aligned_words(tok: Any, tokens: list[int], alignment: Any) -> list[AlignedWord]:
    """Words of ``tokens`` with times from a CTranslate2 alignment (faster-whisper's method)."""
    words, word_tokens = tok.split_to_word_tokens([*tokens, tok.eot])
    if len(word_tokens) <= 1:
        return []
    pairs = alignment.alignments
    text_idx = np.array([p[0] for p in pairs])
    time_idx = np.array([p[1] for p in pairs])
    probs = list(alignment.text_token_probs)
    bounds = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_s = time_idx[jumps] / (FRAMES_PER_SECOND / 2)
    if len(jump_s) < bounds[-1] + 1:
        jump_s = np.pad(jump_s, (0, bounds[-1] + 1 - len(jump_s)), mode="edge")
    out: list[AlignedWord] = []
    for k, (w, wt) in enumerate(zip(words[:-1], word_tokens[:-1], strict=True)):
        a, b = int(bounds[k]), int(bounds[k + 1])
        p = float(np.mean(probs[a:b])) if b > a and probs[a:b] else 0.0
        if out and w.strip() and all(ch in _TRAILING_PUNCT for ch in w.strip()):
            prev = out[-1]        # trailing punctuation joins the word before it
            out[-1] = AlignedWord(prev.text + w, prev.n_tokens + len(wt), prev.start_s, prev.end_s,
                                  prev.probability)
            continue
        out.append(AlignedWord(w, len(wt), float(jump_s[a]), float(jump_s[b]), p))
    return out


def shift_times(out: WhisperOutput, lead_s: float) -> None:
    """Measure ``out``'s times from the end of the lead silence rather than the window start (a time inside
    the lead becomes 0)."""
    out.segment_ends = [(n, max(0.0, t - lead_s)) for n, t in out.segment_ends]
    if out.end_s is not None:
        out.end_s = max(0.0, out.end_s - lead_s)
    if out.words:
        out.words = [AlignedWord(w.text, w.n_tokens, max(0.0, w.start_s - lead_s), max(0.0, w.end_s - lead_s),
                                 w.probability) for w in out.words]
