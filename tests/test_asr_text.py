"""Text normalization, WER / CER, hallucination filters and the streaming policy pieces (no model)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kikimimi.engine.errors import ParamError
from kikimimi.models.asr.hallucination import (
    collapse_repeats,
    find_loop,
    is_silence_phrase,
    remove_repeats,
    strip_annotations,
)
from kikimimi.models.asr.policy import AdaptiveInterval, LocalAgreement, TimedWord, common_prefix, trim_point
from kikimimi.models.asr.text import ErrorCount, cer, edit_distance, join_text, normalize, tidy, wer

# ---------------------------------------------------------------------------- WER / CER


def test_edit_distance_known_cases() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a", "b"]) == 2
    assert edit_distance(["a", "b"], []) == 2
    assert edit_distance(["a", "b", "c"], ["a", "c"]) == 1
    assert edit_distance(["a", "b"], ["b", "a"]) == 2


@given(st.lists(st.integers(0, 3), max_size=12), st.lists(st.integers(0, 3), max_size=12))
def test_edit_distance_properties(a: list[int], b: list[int]) -> None:
    d = edit_distance(a, b)
    assert d == edit_distance(b, a)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
    assert (d == 0) == (a == b)


def test_wer_ignores_case_and_punctuation() -> None:
    e = wer("AND SO MY FELLOW AMERICANS", "And so, my fellow Americans!")
    assert e == ErrorCount(0, 5)
    e = wer("MISTER HALE SAID", "Mr. Hale said.")
    assert e.errors == 0
    e = wer("the cat sat", "the cat sat down")
    assert (e.errors, e.length) == (1, 3)
    assert e.rate == pytest.approx(1 / 3)


def test_error_counts_add_up_over_a_corpus() -> None:
    total = wer("a b c d", "a b c d") + wer("a b", "a x")
    assert (total.errors, total.length) == (1, 6)
    assert ErrorCount().rate == 0.0
    assert ErrorCount(2, 0).rate == float("inf")


def test_cer_japanese_ignores_spaces_and_punctuation() -> None:
    ref = "今日は、良い天気です。"
    assert cer(ref, "今日は 良い 天気です").errors == 0
    e = cer(ref, "今日は良い天気でした")
    assert e.length == 9 and e.errors == 2


def test_normalize_and_join() -> None:
    assert normalize("Don't stop—NOW!", "en") == "don't stop now"
    assert normalize("well-known", "en") == "well known"
    assert normalize("ｶﾀｶﾅ、テスト。", "ja") == "カタカナテスト"
    assert join_text(["今日は", " 良い", "天気"], "ja") == "今日は良い天気"
    assert join_text([" hello", "world "], "en") == "hello world"


def test_tidy_removes_spaces_next_to_japanese_only() -> None:
    assert tidy(" 今日は 良い 天気 ", "ja") == "今日は良い天気"
    assert tidy("iPhone 12 を 買った", "ja") == "iPhone 12を買った"
    assert tidy("  hello   world ", "en") == "hello world"


# ---------------------------------------------------------------------------- hallucination


@pytest.mark.parametrize(("text", "lang"), [
    ("Thank you.", "en"), ("Thanks for watching!", "en"), (" you", "en"), ("[Music]", "en"), ("", "en"),
    ("ご視聴ありがとうございました。", "ja"), ("チャンネル登録よろしくお願いします", "ja"),
    ("Thank you for watching.", "ja"),
])
def test_silence_phrases_are_recognized(text: str, lang: str) -> None:
    assert is_silence_phrase(text, lang)


@pytest.mark.parametrize(("text", "lang"), [
    ("Thank you for the report, it was clear.", "en"), ("And so my fellow Americans", "en"),
    ("ありがとうございました。明日また来ます。", "ja"),
])
def test_real_text_is_not_a_silence_phrase(text: str, lang: str) -> None:
    assert not is_silence_phrase(text, lang)


def test_strip_annotations() -> None:
    assert strip_annotations("[Music] hello (applause) there ♪♪") == " hello  there "
    assert strip_annotations("\uff08拍手\uff09こんにちは") == "こんにちは"   # fullwidth brackets


def test_find_loop_and_collapse() -> None:
    seq = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 9]
    assert find_loop(seq, min_period=4, min_repeats=3) == (4, 12)
    assert collapse_repeats(seq, min_period=4, min_repeats=3) == [1, 2, 3, 4, 9]
    assert find_loop([1, 2, 3, 4, 1, 2, 3, 4], min_period=4, min_repeats=3) is None
    assert find_loop([5, 5, 5], short_period_repeats=4) is None
    assert collapse_repeats([5, 5, 5, 5, 5, 6], short_period_repeats=4) == [5, 6]


def test_remove_repeats_words_and_characters() -> None:
    looped = "What has happened to me? What has happened to me? What has happened to me?"
    assert remove_repeats(looped, "en") == "What has happened to me?"
    legit = "Some sung out, tear down the fence, tear down the fence."
    # two back-to-back copies of 4+ words count as a loop (a known limitation on real repetitions)
    assert remove_repeats(legit, "en") == "Some sung out, tear down the fence,"
    assert remove_repeats("no no no", "en") == "no no no"
    assert remove_repeats("ありがとうありがとうありがとう", "ja") == "ありがとう"
    assert remove_repeats("はいはい", "ja") == "はいはい"


# ---------------------------------------------------------------------------- policy


def _words_ok(seq: list[str], k: int) -> bool:
    return k < len(seq) and seq[k].startswith(" ")


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0


def test_local_agreement_commits_what_two_hypotheses_share_at_word_boundaries() -> None:
    la: LocalAgreement[str] = LocalAgreement(2)
    assert la.update([" the", " cat"], _words_ok) == 0
    # agree on " the", " cat" but " cat" is the last unit of the first hypothesis: not a sure boundary
    assert la.update([" the", " cat", " sat"], _words_ok) == 1
    # history now holds [" cat", " sat"] relative to the committed " the"
    assert la.update([" cat", " sa", "t", " on"], _words_ok) == 1     # " sa" vs " sat" disagree
    assert la.update([" sat", " on", " the"], _words_ok) == 0
    # agree on " sat on the", but " the" ends the older hypothesis: commit " sat on"
    assert la.update([" sat", " on", " the", " mat"], _words_ok) == 2


def test_local_agreement_min_gap_waits_for_distant_evidence() -> None:
    la: LocalAgreement[str] = LocalAgreement(2, min_gap=100)
    assert la.update([" a", " b", " c"], _words_ok, position=50) == 0
    assert la.update([" a", " b", " c"], _words_ok, position=100) == 0   # only 50 apart
    assert la.update([" a", " b", " c", " d"], _words_ok, position=150) == 2
    with pytest.raises(ParamError, match="allowed"):
        LocalAgreement(1)


def test_trim_point_prefers_segment_and_sentence_ends() -> None:
    words = [TimedWord(" Hello", 1, 0.0, 0.5), TimedWord(" world.", 2, 0.5, 1.0),
             TimedWord(" How", 3, 1.4, 1.6, segment_end=False), TimedWord(" are", 4, 1.6, 1.8),
             TimedWord(" you", 5, 1.8, 2.0)]
    assert trim_point(words, 5, buffer_s=5.0, trim_after_s=10.0, force_after_s=20.0) is None
    n, cut = trim_point(words, 5, buffer_s=12.0, trim_after_s=10.0, force_after_s=20.0)
    assert n == 2 and 1.0 <= cut <= 1.4
    # only committed words may be cut away
    assert trim_point(words, 1, buffer_s=12.0, trim_after_s=10.0, force_after_s=20.0) is None
    n, _ = trim_point(words, 4, buffer_s=25.0, trim_after_s=10.0, force_after_s=20.0)
    assert n == 2  # a sentence end wins over a later plain word when there is one
    no_sentence = [TimedWord(" a", 1, 0.0, 0.6), TimedWord(" b", 2, 0.7, 1.0), TimedWord(" c", 3, 1.1, 1.3)]
    assert trim_point(no_sentence, 3, buffer_s=12.0, trim_after_s=10.0, force_after_s=20.0) is None
    assert trim_point(no_sentence, 3, buffer_s=21.0, trim_after_s=10.0, force_after_s=20.0)[0] == 2


def test_adaptive_interval_follows_decode_time_within_bounds() -> None:
    iv = AdaptiveInterval(30, 200, headroom=2.0, alpha=1.0)
    assert iv.frames == 30
    iv.observe(0.05)
    assert iv.frames == 30          # 2 x 50 ms = 10 frames, clamped up
    iv.observe(0.4)
    assert iv.frames == 80
    iv.observe(5.0)
    assert iv.frames == 200
    with pytest.raises(ParamError, match="allowed"):
        AdaptiveInterval(10, 5)
