"""The words a user taught: found in their transcripts, carried with the weights.

Fine-tuning puts the words into the merged weights, which spell them with no prompt. The
list of them, the words the base model got wrong in the user's own transcripts, is kept in
the weights archive's manifest: it says what a run taught, and a request may also read it
as a prompt (`use_vocabulary`), which Whisper copies spellings from.

    words = find_vocabulary(references, base_hypotheses, tokenizer)
"""

from __future__ import annotations

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
    """The entries of `vocabulary` that `text` does not contain (all of an entry's words;
    a possessive counts: "Klombrix's" says Klombrix)."""
    present = {_key(w) for w in words(text)}
    present |= {key[:-2] for key in present if key.endswith("'s")}
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
