"""The final's window (the carry of the previous final's words) and the speculative final's cache, as logic."""

from __future__ import annotations

import numpy as np

from kikimimi.models.asr.carry import final_window, plan_carry
from kikimimi.models.asr.speculation import Speculation, same_request
from kikimimi.models.asr.whisper_config import AlignedWord, WhisperRequest

FPS = 100
TEXT = {1: " And", 2: " so", 3: " my", 4: " fellow", 5: " Americans", 6: ",", 7: "."}


def decode_text(tokens: list[int]) -> str:
    return "".join(TEXT[t] for t in tokens)


def window() -> tuple[int, list[int], list[AlignedWord]]:
    """A previous final's window at frame 1000: 'And so my fellow Americans,' (the comma its own token)."""
    words = [AlignedWord(" And", 1, 0.0, 0.4, 0.9), AlignedWord(" so", 1, 0.5, 0.8, 0.9),
             AlignedWord(" my", 1, 1.0, 1.2, 0.9), AlignedWord(" fellow", 1, 1.3, 1.7, 0.9),
             AlignedWord(" Americans,", 2, 1.8, 2.6, 0.9)]
    return 1000, [1, 2, 3, 4, 5, 6], words


def test_the_carry_starts_between_words_and_drops_the_closing_punctuation() -> None:
    plan = plan_carry(window(), lo=1040, start_frame=1300, context=[9, 1, 2, 3, 4, 5, 6], carry_words=120,
                      decode_text=decode_text, fps=FPS)
    assert plan is not None
    # 'so' is the first word whose cut (between 'And' ending at 0.4 s and 'so' at 0.5 s: 0.45 s) is >= frame 1040
    assert plan.origin == 1045 and plan.carried == [2, 3, 4, 5]       # no ',' at the end
    assert plan.final_context == [9, 1]                                  # the carried words left the prompt
    assert [f for f, _ in plan.points] == [1045, 1090, 1125, 1175] and [k for _, k in plan.points] == [0, 1, 2, 3]


def test_no_carry_when_the_words_end_before_the_limit_or_the_utterance_starts_inside_them() -> None:
    assert plan_carry(window(), lo=1300, start_frame=1300, context=[], carry_words=120, decode_text=decode_text,
                      fps=FPS) is None
    assert plan_carry(window(), lo=0, start_frame=990, context=[], carry_words=120, decode_text=decode_text,
                      fps=FPS) is None                                   # the first cut lies after the start
    assert plan_carry(window(), lo=0, start_frame=1300, context=[], carry_words=1, decode_text=decode_text,
                      fps=FPS).carried == [5]                            # the last word only


def test_the_final_window_takes_the_earliest_start_that_fits() -> None:
    plan = plan_carry(window(), lo=0, start_frame=1300, context=[], carry_words=120, decode_text=decode_text,
                      fps=FPS)
    assert plan is not None and plan.points[0] == (1000, 0)
    assert final_window(plan, plan.origin, 1300, end=3000, oldest=0, max_window=3000) == (1000, 0)
    assert final_window(plan, plan.origin, 1300, end=4060, oldest=0, max_window=3000) == (1090, 2)
    assert final_window(plan, plan.origin, 1300, end=4250, oldest=0, max_window=3000) == (1300, None)
    assert final_window(plan, plan.origin, 1300, end=4400, oldest=0, max_window=3000) is None
    assert final_window(plan, plan.origin, 1300, end=3000, oldest=1100, max_window=3000) == (1125, 3)
    assert final_window(None, 1300, 1300, end=2000, oldest=0, max_window=3000) == (1300, None)
    assert final_window(None, -1, 1300, end=2000, oldest=0, max_window=3000) is None   # cut by a seek


def request(frames: np.ndarray, prefix: list[int]) -> WhisperRequest:
    req = WhisperRequest(None, True, frames, [1, 2], prefix, "en", want_words=True, kind="final")  # type: ignore[arg-type]
    req.start_frame, req.end_frame, req.carry = 0, len(frames), len(prefix)  # type: ignore[attr-defined]
    return req


def test_a_kept_output_serves_only_the_same_request_and_only_once() -> None:
    frames = np.random.default_rng(0).standard_normal((200, 80)).astype(np.float32)
    spec = Speculation()
    spec.keep(request(frames, [5]), "out")
    assert spec.take(request(frames.copy(), [5])) == "out" and spec.used == 1
    assert spec.take(request(frames, [5])) is None                       # taken already
    spec.keep(request(frames, [5]), "out")
    other = frames.copy()
    other[-1, 0] += 1.0
    assert spec.take(request(other, [5])) is None and spec.discarded == 1   # one frame differs
    spec.keep(request(frames, [5]), "out")
    assert spec.take(request(frames, [5, 6])) is None and spec.discarded == 2
    assert not same_request(request(frames, [5]), request(frames[:-1], [5]))
