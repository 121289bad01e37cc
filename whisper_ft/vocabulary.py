"""The words a user taught: found in their transcripts, carried with the weights, read as
a prompt when the tuned model serves.

Fine-tuning changes how the model hears; spelling a new name the same way every time is
what a prompt does best. Whisper reads a prompt (`<|startofprev|>` text) before each window
and copies spellings from it; with the names the base model got wrong in the user's own
transcripts as that prompt, the tuned model spells them in contexts and voices it never
trained on. The prompt also nudges everything around them, so the served transcript is the
plain reading with only the prompted reading's taught words taken from it
(`keep_taught_words`): general speech reads as the model reads it without a prompt.

    words = find_vocabulary(references, base_hypotheses, tokenizer)
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections import Counter
from collections.abc import Sequence

WORD = re.compile(r"[^\W_](?:[\w'’.-]*\w)?")  # a word, keeping inner hyphens/apostrophes/dots
MAX_PROMPT_TOKENS = 150  # Whisper's prompt may hold 223 tokens; leave room for previous text
MISSED_SHARE = 0.5  # a word is new when the base model missed at least half its uses


def words(text: str) -> list[str]:
    return WORD.findall(text)


def _key(word: str) -> str:
    return word.lower().replace("’", "'")


def find_vocabulary(
    references: Sequence[str],
    hypotheses: Sequence[str],
    tokenizer,
    given: Sequence[str] = (),
) -> list[str]:
    """The words of `references` that the base model (its `hypotheses` of the same windows)
    missed in at least half of their uses, and that its tokenizer splits into two or more
    pieces (names and rare words, not common words misheard once), most frequent first,
    after the `given` ones; as many as fit a prompt of MAX_PROMPT_TOKENS."""
    used, missed, spelling = Counter(), Counter(), {}
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        heard = {_key(w) for w in words(hypothesis)}
        for word in words(reference):
            key = _key(word)
            spelling.setdefault(key, word)
            used[key] += 1
            missed[key] += key not in heard
    found = [
        spelling[key]
        for key in sorted(missed, key=lambda k: -missed[k])  # stable: ties keep text order
        if missed[key]
        and missed[key] >= MISSED_SHARE * used[key]
        and _rare(spelling[key], tokenizer)
    ]
    chosen: list[str] = []
    seen: set[str] = set()
    for word in [w.strip() for w in given if w.strip()] + found:
        if _key(word) in seen:
            continue
        if _tokens(", ".join([*chosen, word]), tokenizer) > MAX_PROMPT_TOKENS:
            break
        chosen.append(word)
        seen.add(_key(word))
    return chosen


def absent_from(vocabulary: Sequence[str], text: str) -> list[str]:
    """The entries of `vocabulary` that `text` does not contain (all of an entry's words)."""
    present = {_key(w) for w in words(text)}
    return [entry for entry in vocabulary if not {_key(w) for w in words(entry)} <= present]


def as_hotwords(vocabulary: Sequence[str]) -> str | None:
    """The prompt text for a vocabulary (None when it is empty)."""
    return ", ".join(vocabulary) or None


def _tokens(text: str, tokenizer) -> int:
    return len(tokenizer.encode(" " + text, add_special_tokens=False))


def _rare(word: str, tokenizer) -> bool:
    """Not a common word: no casing of it, with or without a leading space, is a single token
    of the tokenizer (a multilingual tokenizer splits " today" but keeps " Today" whole)."""
    if len(word) < 3 or word.isdigit():
        return False
    casings = {word, word.lower(), word.capitalize()}
    return all(
        len(tokenizer.encode(space + w, add_special_tokens=False)) >= 2
        for w in casings
        for space in ("", " ")
    )


# ---------------------------------------------------------------- serving the vocabulary

SIMILAR = 0.5  # the prompted reading must share this much of the plain one outside the words
MAX_OTHER_WORDS = 2  # words besides a taught one a kept change may bring ("installed X at")


def keep_taught_words(plain: list, prompted: list, vocabulary: Sequence[str]) -> list:
    """The plain reading of a stretch of audio (its Segments), changed only where the
    reading prompted with the vocabulary writes a taught word in its place.

    A prompt of names also nudges the words around them (punctuation, numbers spelled out,
    "seven of clubs" read as "Seven of Klob's") and, on audio with none of them, may even
    make one up ("Zentrafy, the Zentrafy" for "set bed light brightness"): serving the
    prompted reading as it is made general speech worse (BENCHMARKS.md). So a change is
    kept only where it writes each of its taught words once, with at most MAX_OTHER_WORDS
    other words, in a reading that otherwise matches the plain one (SIMILAR); times come from
    the plain segments (and the prompted words' own times when words are timed)."""
    taught = {_key(w) for entry in vocabulary for w in words(entry)}
    if not taught or not plain or not prompted:
        return plain
    ours = [(s, unit) for s, segment in enumerate(plain) for unit in _units(segment)]
    theirs = [unit for segment in prompted for unit in _units(segment)]
    a, b = [_unit_key(u) for _, u in ours], [_unit_key(u) for u in theirs]
    is_taught = [_taught(k, taught) for k in b]
    rest = [k for k, t in zip(b, is_taught, strict=True) if not t]
    if difflib.SequenceMatcher(None, a, rest, autojunk=False).ratio() < SIMILAR:
        return plain
    kept: list[list] = [[] for _ in plain]
    opcodes = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    for op, i1, i2, j1, j2 in opcodes:
        found = [k for k, t in zip(b[j1:j2], is_taught[j1:j2], strict=True) if t]
        once = bool(found) and len(set(found)) == len(found)
        if op != "equal" and once and (j2 - j1) - len(found) <= MAX_OTHER_WORDS:
            owner = ours[min(i1, len(ours) - 1)][0]  # the segment the change starts in
            kept[owner] += theirs[j1:j2]
            continue
        for s, unit in ours[i1:i2]:
            kept[s].append(unit)
    return [_rebuilt(segment, units) for segment, units in zip(plain, kept, strict=True)]


def _units(segment) -> list:
    """A segment's words: its timed Words where it has them, else its text split at spaces."""
    return list(segment.words) if segment.words is not None else segment.text.split()


def _unit_key(unit) -> str:
    text = unit if isinstance(unit, str) else unit.word
    return "".join(words(_key(text)))


def _taught(key: str, taught: set[str]) -> bool:
    return key in taught or (key.endswith("'s") and key[:-2] in taught)


def _rebuilt(segment, units: list):
    if segment.words is None:
        return dataclasses.replace(segment, text=" ".join(units))
    return dataclasses.replace(segment, text="".join(w.word for w in units).strip(), words=units)
