"""mic_source: the error paths (no sounddevice, no PortAudio, no device) and, with a stand-in for the
sounddevice module, the capture path (chunking, sample indices across drops, timestamps)."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kikimimi.engine.clock import ManualClock
from kikimimi.engine.errors import DeviceUnavailable, MissingDependency
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.nodes.mic_source import MicSource


class PortAudioError(Exception):
    pass


class FakeStream:
    """Stands in for sounddevice.InputStream: the test calls ``callback`` as PortAudio would."""

    def __init__(self, samplerate: int, channels: int, dtype: str, device: Any, blocksize: int,
                 callback: Any) -> None:
        self.kw = {"samplerate": samplerate, "channels": channels, "dtype": dtype, "device": device,
                   "blocksize": blocksize}
        self.callback = callback
        self.active = False

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def close(self) -> None:
        pass


def fake_sounddevice(devices: list[dict[str, Any]], stream: type = FakeStream) -> types.ModuleType:
    sd = types.ModuleType("sounddevice")

    def query_devices(device: Any = None, kind: str | None = None) -> Any:
        if device is None and kind is None:
            return devices
        for i, d in enumerate(devices):
            if d["max_input_channels"] > 0 and (device is None or device == i or str(device) in d["name"]):
                return d
        raise ValueError(f"No input device matching {device!r}")

    sd.query_devices = query_devices  # type: ignore[attr-defined]
    sd.InputStream = stream  # type: ignore[attr-defined]
    sd.PortAudioError = PortAudioError  # type: ignore[attr-defined]
    return sd


MIC = {"name": "Built-in Mic", "max_input_channels": 2}
SPEAKER = {"name": "HDMI out", "max_input_channels": 0}


def environment_microphone() -> str:
    """What this machine offers, found without the node: 'no sounddevice', 'no portaudio', 'no input', 'mic'."""
    import importlib.util

    if importlib.util.find_spec("sounddevice") is None:
        return "no sounddevice"
    try:
        import sounddevice as sd
    except OSError:
        return "no portaudio"
    try:
        devices = sd.query_devices()
    except Exception:
        return "no input"
    return "mic" if any(d.get("max_input_channels", 0) > 0 for d in devices) else "no input"


def test_in_this_environment_start_gives_the_error_for_what_is_missing_or_captures() -> None:
    """Each state of the machine has one right outcome: the matching error, or captured audio with a mic."""
    state = environment_microphone()
    node = MicSource("mic", {})
    if state == "no sounddevice":
        with pytest.raises(MissingDependency, match=r"pip install 'kikimimi\[mic\]'"):
            node.on_start()
    elif state == "no portaudio":
        with pytest.raises(MissingDependency, match=r"apt-get install libportaudio2"):
            node.on_start()
    elif state == "no input":
        with pytest.raises(DeviceUnavailable, match=r"input devices: \(none\)|cannot list audio devices"):
            node.on_start()
    else:
        node.on_start()
        try:
            assert node._arrived.wait(10), "a working microphone delivered no audio within 10 s"
        finally:
            node.on_stop()


def test_missing_sounddevice_gives_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(MissingDependency, match=r"Install it with: pip install 'kikimimi\[mic\]'"):
        MicSource("mic", {}).on_start()


def test_missing_portaudio_gives_apt_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # What importing sounddevice does when the PortAudio shared library is not installed.
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    install = r"apt-get install libportaudio2 && pip install 'kikimimi\[mic\]'"
    with pytest.raises(MissingDependency, match=install):
        MicSource("mic", {}).on_start()


def test_no_input_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice([SPEAKER]))
    msg = r"no audio input device found \(asked for None\); input devices: \(none\)"
    with pytest.raises(DeviceUnavailable, match=msg):
        MicSource("mic", {}).on_start()


def test_unknown_device_lists_the_input_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice([SPEAKER, MIC]))
    msg = r"input device 'USB headset' is not available.*input devices: 1: Built-in Mic"
    with pytest.raises(DeviceUnavailable, match=msg):
        MicSource("mic", {"device": "USB headset"}).on_start()


def test_device_that_cannot_open_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    class Busy(FakeStream):
        def start(self) -> None:
            raise PortAudioError("Device unavailable [PaErrorCode -9985]")

    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice([MIC], Busy))
    msg = r"cannot open input device '0' at 16000 Hz.*-9985.*0: Built-in Mic"
    with pytest.raises(DeviceUnavailable, match=msg):
        MicSource("mic", {"device": "0"}).on_start()


def test_capture_chunks_indices_drops_and_timestamps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice([MIC]))
    clock = ManualClock()
    node = MicSource("mic", {"max_backlog_ms": 100}, clock=clock)  # backlog: 1600 samples = 5 blocks
    out: list[AudioChunk] = []
    node.bind(lambda port, msg: out.append(msg) if isinstance(msg, AudioChunk) else None)
    node.on_start()
    stream: FakeStream = node._stream
    assert stream.kw == {"samplerate": 16000, "channels": 1, "dtype": "int16", "device": None,
                         "blocksize": 320}
    stop = threading.Event()

    def capture(n_blocks: int, first_value: int) -> None:
        for i in range(n_blocks):
            clock.advance(20_000_000)
            block = np.full((320, 1), first_value + i, np.int16)
            stream.callback(block, 320, None, None)

    capture(2, 0)
    while node.produce(stop) and len(out) < 2:
        pass
    assert [c.header.sample_index for c in out] == [0, 320]
    assert [c.header.t_ns for c in out] == [20_000_000, 40_000_000]  # arrival of each chunk's last sample
    capture(8, 100)  # the consumer stalls: 8 blocks arrive, only the newest 5 are kept
    for _ in range(5):
        assert node.produce(stop)
    assert node.stats.dropped["overflow"] == 3
    # The jump from 640 to 1600 shows the drop.
    assert [c.header.sample_index for c in out[2:]] == [1600, 1920, 2240, 2560, 2880]
    assert [int(c.samples[0, 0]) for c in out[2:]] == [103, 104, 105, 106, 107]
    capture(1, 200)
    node.on_stop()  # what was captured before stopping still comes out
    assert out[-1].header.sample_index == 3200 and out[-1].header.seq == len(out) - 1
    assert stream.active is False
