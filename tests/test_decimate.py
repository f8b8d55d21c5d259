"""Integer decimation for Silero: position-exact, anti-aliased, independent of chunking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from kikimimi.models.decimate import Decimator, lowpass_taps


def decimate_all(dec: Decimator, x: np.ndarray) -> np.ndarray:
    """Every output whose input span lies inside x (zeros before the start, as the VAD node pads)."""
    k1 = dec.ready(0, x.shape[0])
    a, b = dec.input_span(0, k1)
    padded = np.concatenate((np.zeros(-a, np.float32), x[:b]))
    return dec.apply(padded, 0, k1)


@pytest.mark.parametrize("factor", [2, 3])
def test_tones_pass_or_are_rejected(factor: int) -> None:
    rate = 16000 * factor
    t = np.arange(rate) / rate
    dec = Decimator(factor)
    low = decimate_all(dec, np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    want = np.sin(2 * np.pi * 1000 * np.arange(low.shape[0]) / 16000)  # output k sits at input k * factor
    assert np.abs(low[200:-200] - want[200:-200]).max() < 1e-3
    high = decimate_all(dec, np.sin(2 * np.pi * 12000 * t).astype(np.float32))  # would alias to 4 kHz
    assert np.abs(high[200:-200]).max() < 1e-3
    assert lowpass_taps(factor).sum() == pytest.approx(1.0)


def test_chunked_equals_whole_and_matches_soxr(data_dir: Path) -> None:
    x, _ = sf.read(str(data_dir / "en/librispeech/1998/1998-15444-0007.flac"), dtype="float32")
    x48 = soxr.resample(x, 16000, 48000).astype(np.float32)
    dec = Decimator(3)
    whole = decimate_all(dec, x48)
    pieces, k = [], 0
    for end in range(960, x48.shape[0] + 960, 960):  # as 20 ms chunks arrive
        k1 = dec.ready(k, min(end, x48.shape[0]))
        if k1 > k:
            a, b = dec.input_span(k, k1)
            span = np.concatenate((np.zeros(max(0, -a), np.float32), x48[max(a, 0):b]))
            pieces.append(dec.apply(span, k, k1))
            k = k1
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    ref = soxr.resample(x48, 48000, 16000)[:whole.shape[0]]
    err = whole[100:-100] - ref[100:-100]
    # within -30 dB of soxr HQ: the difference is the top of the band (7-8 kHz), which this filter rolls off
    assert np.sqrt(np.mean(err ** 2)) < 0.03 * np.sqrt(np.mean(ref ** 2))


def test_look_ahead_and_errors() -> None:
    dec = Decimator(2)
    assert dec.half == 64
    assert dec.ready(0, 64) == 0 and dec.ready(0, 65) == 1 and dec.ready(0, 67) == 2
    assert dec.input_span(0, 2) == (-64, 67)
    with pytest.raises(ValueError, match="need 131 input samples"):
        dec.apply(np.zeros(10, np.float32), 0, 2)
    with pytest.raises(ValueError, match="decimation factor must be an int >= 1"):
        lowpass_taps(0)
