"""Fused family: the transcript as users see it, labelled with who spoke it and how.

The recognizer sends :class:`~kikimimi.engine.msgs.speech.Transcript` revisions; the fusion node
sends one :class:`LabeledTranscript` for each, with the same text, span and words plus the speaker,
the visible face that spoke and the affect labels. A port's type says which of the two it carries.
"""

from __future__ import annotations

from dataclasses import dataclass

from kikimimi.engine.messages import Header, Message, message_type
from kikimimi.engine.msgs.affect import AffectLabel
from kikimimi.engine.msgs.speech import Transcript, Word, check_revision
from kikimimi.engine.msgs.vision import NO_FACE


@message_type
@dataclass(frozen=True, slots=True)
class LabeledTranscript(Message):
    """One revision of an utterance's transcript with its labels.

    utterance_id ... words: as in :class:`~kikimimi.engine.msgs.speech.Transcript` (committed only
    grows, unstable may change, the last revision is final). speaker / speaker_score: who spoke (an
    enrolled name, ``voice_N`` for an unknown voice of this session, ``unknown``; "" = no label) and
    the similarity behind it; a final whose words were said by several speakers labels each
    :class:`~kikimimi.engine.msgs.speech.Word`, and ``speaker`` is the one who said most of it.
    face_id / face_score: the visible face that spoke it (-1 = none known) and its mean speaking
    probability over the utterance. affect: how it was said (empty until an affect model is wired in).
    """

    utterance_id: int
    revision: int
    committed: str
    unstable: str
    final: bool
    start_sample: int
    end_sample: int
    sample_rate: int
    language: str
    words: tuple[Word, ...] = ()
    speaker: str = ""
    speaker_score: float = 0.0
    face_id: int = NO_FACE
    face_score: float = 0.0
    affect: tuple[AffectLabel, ...] = ()

    def __post_init__(self) -> None:
        check_revision(self)

    @property
    def text(self) -> str:
        """Committed and unstable text together."""
        return self.committed + self.unstable

    @classmethod
    def of(cls, t: Transcript, header: Header | None = None, words: tuple[Word, ...] | None = None,
           speaker: str = "", speaker_score: float = 0.0, face_id: int = NO_FACE, face_score: float = 0.0,
           affect: tuple[AffectLabel, ...] = ()) -> LabeledTranscript:
        """``t`` with these labels (and ``words``, relabelled, in place of its own when given)."""
        return cls(t.header if header is None else header, t.utterance_id, t.revision, t.committed, t.unstable,
                   t.final, t.start_sample, t.end_sample, t.sample_rate, t.language,
                   t.words if words is None else words, speaker, speaker_score, face_id, face_score, affect)


AnyTranscript = Transcript | LabeledTranscript
"""A transcript revision as a sink may receive it: straight from a recognizer, or labelled by fusion."""
TRANSCRIPT_TYPES: tuple[type[Transcript], type[LabeledTranscript]] = (Transcript, LabeledTranscript)
