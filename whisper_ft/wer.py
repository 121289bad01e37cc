"""Word error rate as Whisper's authors score it: normalise both sides, then count edits."""

from __future__ import annotations

from collections.abc import Sequence


def normalizer(language: str):
    """Whisper's English normaliser for English, its basic one for other languages."""
    from transformers.models.whisper.english_normalizer import (
        BasicTextNormalizer,
        EnglishTextNormalizer,
    )

    return EnglishTextNormalizer({}) if language == "en" else BasicTextNormalizer()


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str], language: str) -> float:
    """WER in percent after normalising both sides; empty references are skipped."""
    import jiwer

    norm = normalizer(language)
    pairs = [(norm(r), norm(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r.strip()]
    if not pairs:
        return 0.0
    return 100.0 * jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def reference_words(references: Sequence[str], language: str) -> int:
    """How many words `word_error_rate` scores in `references`, after normalising."""
    norm = normalizer(language)
    return sum(len(norm(r).split()) for r in references)
