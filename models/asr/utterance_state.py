"""The decoding state of one utterance of a Whisper stream (a plain record; the stream changes it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kikimimi.engine.msgs.speech import Word
from kikimimi.models.asr.carry import CarryPlan
from kikimimi.models.asr.policy import LocalAgreement

if TYPE_CHECKING:
    from kikimimi.models.asr.whisper_config import AlignedWord


@dataclass(eq=False)
class UtteranceState:
    """One utterance's decoding state in a :class:`~kikimimi.models.asr.whisper_stream.WhisperStream`.

    Positions are frame indices of the stream's frame ring unless named ``*_sample``. ``buf_start``: where
    the next decode's window begins (moves on as committed text is cut off). ``context``: the prompt
    (previous text). ``trimmed`` / ``committed`` / ``tail``: committed tokens cut from the buffer, committed
    tokens still in it (forced as prefix), the uncommitted rest of the last hypothesis. ``carry``: leading
    tokens of ``trimmed + committed`` that belong to the previous final (never published). ``words``: the
    final's words so far, on the sample clock. ``pub_*``: what was last published. ``pending``: a request
    is out. ``last_window``: the final window (for the next utterance's carry). ``redecoded``: the final
    replaced what partials committed. ``origin`` / ``plan`` / ``restart``: see the field comments.
    """

    start_sample: int
    start_frame: int
    buf_start: int
    language: str | None
    agreement: LocalAgreement[int]
    end_sample: int | None = None
    end_frame: int | None = None
    context: list[int] = field(default_factory=list)
    carry: int = 0
    trimmed: list[int] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)
    tail: list[int] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    last_decoded: int = 0
    pub_committed: str = ""
    pub_unstable: str = ""
    published: bool = False
    pending: bool = False
    last_window: tuple[int, list[int], list[AlignedWord]] | None = None
    redecoded: bool = False
    origin: int = -1         # where a final decoded as a whole begins (the carry's start); -1: it may not
    plan: CarryPlan | None = None   # the previous final's words the final starts at, if any
    restart: bool = False    # the pending request decodes from ``origin``
