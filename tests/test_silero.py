"""Silero VAD through onnxruntime: same probabilities as silero's own TorchScript model, batching, state."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from kikimimi.engine.errors import MissingDependency
from kikimimi.models import silero
from kikimimi.models.silero import CONTEXT, WINDOW, SileroState, SileroVad, silero_model_path

CLIP = "en/librispeech/1998/1998-15444-0007.flac"
OTHER = "en/librispeech/2414/2414-128291-0003.flac"


@pytest.fixture(scope="module")
def model() -> SileroVad:
    return SileroVad()


def load(data_dir: Path, rel: str, rate: int = 16000) -> np.ndarray:
    x, sr = sf.read(str(data_dir / rel), dtype="float32")
    return x if sr == rate else soxr.resample(x, sr, rate).astype(np.float32)


def windows(x: np.ndarray, win: int) -> np.ndarray:
    n = -(-x.shape[0] // win)
    padded = np.zeros(n * win, np.float32)
    padded[:x.shape[0]] = x
    return padded.reshape(n, win)


def test_model_inputs_and_outputs(model: SileroVad) -> None:
    ins = {i.name: (i.shape, i.type) for i in model.session.get_inputs()}
    outs = [(o.name, o.type) for o in model.session.get_outputs()]
    assert ins["input"][1] == "tensor(float)" and len(ins["input"][0]) == 2
    assert ins["state"][0][0] == 2 and ins["state"][0][2] == 128
    assert ins["sr"] == ([], "tensor(int64)")
    assert [t for _, t in outs] == ["tensor(float)", "tensor(float)"]
    assert model.session.get_session_options().intra_op_num_threads == 1


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("rate", [16000, 8000])
def test_same_probabilities_as_silero_torchscript(model: SileroVad, data_dir: Path, rate: int) -> None:
    """silero_vad.jit (the package's own model and per-call context logic) on every window of a real clip."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    ref_model = torch.jit.load(str(silero_model_path("silero_vad.jit")), map_location="cpu").eval()
    w = windows(load(data_dir, CLIP, rate), WINDOW[rate])
    with torch.no_grad():
        ref = np.array([ref_model(torch.from_numpy(row.copy()), rate).item() for row in w])
    ours = model.probabilities(w.reshape(-1), rate)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert ref.max() > 0.9 and ref.min() < 0.1  # the clip has both speech and silence


def test_batched_step_equals_per_stream_steps(model: SileroVad, data_dir: Path) -> None:
    a, b = windows(load(data_dir, CLIP), 512), windows(load(data_dir, OTHER), 512)
    n = min(len(a), len(b))
    together = [model.new_state(), model.new_state(), model.new_state()]
    alone = [model.new_state(), model.new_state(), model.new_state()]
    calls = model.calls
    for k in range(n):
        batch = np.stack([a[k], b[k], a[n - 1 - k]])
        pb = model.step(together, batch)
        ps = [model.step([alone[i]], batch[i:i + 1])[0] for i in range(3)]
        np.testing.assert_allclose(pb, ps, atol=1e-6)
    assert model.calls - calls == 4 * n  # one call per batch of three, three single calls
    for s, t in zip(together, alone, strict=True):
        np.testing.assert_allclose(s.state, t.state, atol=1e-6)
        np.testing.assert_array_equal(s.context, t.context)


def test_run_with_explicit_context_equals_step(model: SileroVad, data_dir: Path) -> None:
    x = load(data_dir, CLIP)[:512 * 20]
    s1, s2 = model.new_state(), model.new_state()
    p1 = np.concatenate([model.step([s1], x[None, k:k + 512]) for k in range(0, x.shape[0], 512)])
    padded = np.concatenate((np.zeros(CONTEXT[16000], np.float32), x))
    p2 = np.concatenate([model.run([s2], padded[None, k:k + 576]) for k in range(0, x.shape[0], 512)])
    np.testing.assert_array_equal(p1, p2)


def test_reset_starts_over(model: SileroVad, data_dir: Path) -> None:
    w = windows(load(data_dir, CLIP), 512)[:30]
    st = model.new_state()
    first = [model.step([st], row[None])[0] for row in w]
    assert np.abs(st.state).sum() > 0
    st.reset()
    assert not st.state.any() and not st.context.any()
    again = [model.step([st], row[None])[0] for row in w]
    np.testing.assert_array_equal(first, again)


def test_bad_inputs_name_what_is_allowed(model: SileroVad) -> None:
    with pytest.raises(ValueError, match="sample rate 44100 is not allowed; allowed: 8000, 16000"):
        SileroState(44100)
    with pytest.raises(ValueError, match="must have 512 samples"):
        model.step([model.new_state()], np.zeros((1, 480), np.float32))
    with pytest.raises(ValueError, match="one Silero batch needs one sample rate"):
        model.run([model.new_state(16000), model.new_state(8000)], np.zeros((2, 576), np.float32))
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        SileroVad(threads=0)
    assert model.step([], np.zeros((0, 512), np.float32)).shape == (0,)


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(silero.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependency, match=r"Install it with: pip install 'kikimimi\[vad\]'"):
        silero_model_path()


def test_missing_onnxruntime_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes ``import onnxruntime`` fail
    with pytest.raises(MissingDependency, match=r"Silero VAD \(onnxruntime\) is not available"):
        SileroVad()
