"""A tiny audio-visual "recognizer" directory in the layout of transformers remote-code checkpoints (AVista style).

:func:`make_tiny_av` writes, into a directory, ``configuration_tinyav.py``, ``modeling_tinyav.py``,
``feature_extraction_tinyav.py``, ``tokenization_tinyav.py``, ``processing_tinyav.py``, the weights
(``model.safetensors``), a character vocabulary and the JSON files whose ``auto_map`` entries let
``AutoProcessor`` / ``AutoModelForSpeechSeq2Seq.from_pretrained(dir, trust_remote_code=True)`` load it.

The "model" is deterministic and checkable: ``generate(input_values, video)`` emits one word per complete
0.4 s block of audio (6400 samples at 16 kHz, 10 video frames at 25 fps), chosen by the block's loudness
(RMS above the first weight) and the mean brightness of its mouth frames (above the second weight):
quiet+dark "mu", quiet+bright "mi", loud+dark "ka", loud+bright "ko". :func:`expected_text` computes the
same words in numpy, so tests can assert the transcript and that the video changes it. The processor names
its parts with the legacy ``feature_extractor_class`` / ``tokenizer_class`` attributes, as AVista's does
(transformers 5 logs that they are deprecated, and loads them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

BLOCK = 6400
FRAMES_PER_BLOCK = 10
THRESHOLDS = (0.05, 0.5)          # audio RMS, mouth brightness in [0, 1]
WORDS = {(False, False): "mu", (False, True): "mi", (True, False): "ka", (True, True): "ko"}
VOCAB = ["<pad>", "<s>", "</s>", " ", "a", "i", "k", "m", "o", "u"]

CONFIGURATION = '''
from transformers import PretrainedConfig


class TinyAvConfig(PretrainedConfig):
    model_type = "tinyav"

    def __init__(self, block_samples=6400, frames_per_block=10, vocab_size=10, **kwargs):
        kwargs.setdefault("pad_token_id", 0)
        kwargs.setdefault("bos_token_id", 1)
        kwargs.setdefault("eos_token_id", 2)
        kwargs.setdefault("decoder_start_token_id", 1)
        kwargs.setdefault("is_encoder_decoder", True)
        super().__init__(**kwargs)
        self.block_samples = block_samples
        self.frames_per_block = frames_per_block
        self.vocab_size = vocab_size
'''

MODELING = '''
import torch
from transformers import PreTrainedModel

from .configuration_tinyav import TinyAvConfig

WORDS = {(False, False): "mu", (False, True): "mi", (True, False): "ka", (True, True): "ko"}
VOCAB = ["<pad>", "<s>", "</s>", " ", "a", "i", "k", "m", "o", "u"]


class TinyAvForSpeechSeq2Seq(PreTrainedModel):
    config_class = TinyAvConfig
    main_input_name = "input_values"

    def __init__(self, config):
        super().__init__(config)
        self.thresholds = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_values=None, video=None, **kwargs):
        raise NotImplementedError("tinyav only generates")

    @torch.no_grad()
    def generate(self, input_values=None, video=None, max_new_tokens=None, **kwargs):
        cfg = self.config
        rows = []
        for b in range(input_values.shape[0]):
            audio = input_values[b].float()
            frames = video[b].float()
            ids = [cfg.bos_token_id]
            n_blocks = min(audio.shape[0] // cfg.block_samples, frames.shape[0] // cfg.frames_per_block)
            for j in range(n_blocks):
                a = audio[j * cfg.block_samples:(j + 1) * cfg.block_samples]
                v = frames[j * cfg.frames_per_block:(j + 1) * cfg.frames_per_block]
                loud = bool(torch.sqrt(torch.mean(a * a)) > self.thresholds[0])
                bright = bool(v.mean() > self.thresholds[1])
                if j:
                    ids.append(VOCAB.index(" "))
                ids += [VOCAB.index(c) for c in WORDS[(loud, bright)]]
            if max_new_tokens is not None:
                ids = ids[:1 + max_new_tokens]
            rows.append(ids + [cfg.eos_token_id])
        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), cfg.pad_token_id, dtype=torch.long, device=input_values.device)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        return out
'''

FEATURE_EXTRACTION = '''
import numpy as np
from transformers import FeatureExtractionMixin
from transformers.feature_extraction_utils import BatchFeature


class TinyAvFeatureExtractor(FeatureExtractionMixin):
    model_input_names = ["input_values", "video"]

    def __init__(self, sampling_rate=16000, **kwargs):
        super().__init__(**kwargs)
        self.sampling_rate = sampling_rate

    def __call__(self, audio=None, video=None, sampling_rate=None, return_tensors=None, **kwargs):
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(f"tinyav needs {self.sampling_rate} Hz audio, got {sampling_rate}")
        audio = np.asarray(audio, dtype=np.float32).reshape(1, -1)
        video = np.asarray(video)
        if video.ndim != 3 or video.dtype != np.uint8:
            raise ValueError(f"tinyav needs uint8 (T, H, W) mouth frames, got {video.dtype} {video.shape}")
        pixels = (video.astype(np.float32) / 255.0)[None]
        return BatchFeature({"input_values": audio, "video": pixels}, tensor_type=return_tensors)
'''

TOKENIZATION = '''
import json
import os

from transformers import PreTrainedTokenizer


class TinyAvTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "vocab.json"}
    model_input_names = ["input_ids"]

    def __init__(self, vocab_file, **kwargs):
        with open(vocab_file, encoding="utf-8") as f:
            self.vocab = json.load(f)
        self.ids = {i: t for t, i in self.vocab.items()}
        kwargs.setdefault("pad_token", "<pad>")
        kwargs.setdefault("bos_token", "<s>")
        kwargs.setdefault("eos_token", "</s>")
        super().__init__(**kwargs)

    @property
    def vocab_size(self):
        return len(self.vocab)

    def get_vocab(self):
        return dict(self.vocab)

    def _tokenize(self, text, **kwargs):
        return list(text)

    def _convert_token_to_id(self, token):
        return self.vocab.get(token, self.vocab["<pad>"])

    def _convert_id_to_token(self, index):
        return self.ids.get(int(index), "<pad>")

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        path = os.path.join(save_directory, (filename_prefix or "") + "vocab.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.vocab, f)
        return (path,)
'''

PROCESSING = '''
from transformers import ProcessorMixin


class TinyAvProcessor(ProcessorMixin):
    feature_extractor_class = "AutoFeatureExtractor"
    tokenizer_class = "AutoTokenizer"

    def __init__(self, feature_extractor, tokenizer):
        super().__init__(feature_extractor, tokenizer)

    def __call__(self, audio=None, video=None, sampling_rate=None, return_tensors=None, **kwargs):
        return self.feature_extractor(audio=audio, video=video, sampling_rate=sampling_rate,
                                      return_tensors=return_tensors)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)
'''

SOURCES = {
    "configuration_tinyav.py": CONFIGURATION,
    "modeling_tinyav.py": MODELING,
    "feature_extraction_tinyav.py": FEATURE_EXTRACTION,
    "tokenization_tinyav.py": TOKENIZATION,
    "processing_tinyav.py": PROCESSING,
}


def make_tiny_av(path: Path, *, model_map: bool = True, processor_map: bool = True) -> Path:
    """Write the tiny AV model directory into ``path`` (created). ``model_map`` / ``processor_map`` false leave
    the model's / the processor's auto_map entry out (directories the loader must refuse)."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    for name, text in SOURCES.items():
        (path / name).write_text(text.lstrip(), encoding="utf-8")
    auto = {"AutoConfig": "configuration_tinyav.TinyAvConfig"}
    if model_map:
        auto["AutoModelForSpeechSeq2Seq"] = "modeling_tinyav.TinyAvForSpeechSeq2Seq"
    _write_json(path / "config.json", {
        "model_type": "tinyav", "architectures": ["TinyAvForSpeechSeq2Seq"], "block_samples": BLOCK,
        "frames_per_block": FRAMES_PER_BLOCK, "vocab_size": len(VOCAB), "pad_token_id": 0, "bos_token_id": 1,
        "eos_token_id": 2, "decoder_start_token_id": 1, "is_encoder_decoder": True, "auto_map": auto,
    })
    processor = {"AutoProcessor": "processing_tinyav.TinyAvProcessor"} if processor_map else {}
    _write_json(path / "preprocessor_config.json", {
        "feature_extractor_type": "TinyAvFeatureExtractor", "sampling_rate": 16000,
        "auto_map": {"AutoFeatureExtractor": "feature_extraction_tinyav.TinyAvFeatureExtractor", **processor},
    })
    _write_json(path / "tokenizer_config.json", {
        "tokenizer_class": "TinyAvTokenizer", "pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>",
        "auto_map": {"AutoTokenizer": ["tokenization_tinyav.TinyAvTokenizer", None]},
    })
    _write_json(path / "vocab.json", {t: i for i, t in enumerate(VOCAB)})
    if processor_map:
        _write_json(path / "processor_config.json", {"processor_class": "TinyAvProcessor", "auto_map": processor})
    save_file({"thresholds": torch.tensor(THRESHOLDS, dtype=torch.float32)}, str(path / "model.safetensors"))
    return path


def _write_json(path: Path, data: dict[str, object]) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def expected_text(audio: np.ndarray, video: np.ndarray) -> str:
    """The tiny model's transcript of ``audio`` (float32, 16 kHz) with mouth frames ``video`` (uint8 (T, 96, 96)
    at 25 fps, frame ``i`` at sample ``640 * i`` of the audio), computed in numpy."""
    n = min(len(audio) // BLOCK, len(video) // FRAMES_PER_BLOCK)
    words = []
    for j in range(n):
        a = audio[j * BLOCK:(j + 1) * BLOCK].astype(np.float64)
        v = video[j * FRAMES_PER_BLOCK:(j + 1) * FRAMES_PER_BLOCK].astype(np.float32) / 255.0
        words.append(WORDS[(bool(np.sqrt(np.mean(a * a)) > THRESHOLDS[0]), bool(v.mean() > THRESHOLDS[1]))])
    return " ".join(words)
