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
# Between two words: the second starts a sentence, or a line (a cue), whose capital is then
# the sentence's or the line's (verse and many subtitles capitalise every line), not the
# word's.
SENTENCE_OR_LINE_END = re.compile(r"[.!?…\n]")
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
    """The words of `references` (each a window's transcript, a line for each of its cues)
    that the base model (its `hypotheses` of the same windows) missed in at least half of
    their uses, and that its tokenizer splits into two or more pieces (names and rare
    words, not common words misheard once), most frequent first, after the `given` ones;
    as many as fit a prompt of MAX_PROMPT_TOKENS."""
    used, missed, spelling, cased = Counter(), Counter(), {}, set()
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        heard = set(words(hypothesis))
        heard_keys = {_key(w) for w in heard}
        for word, starts_sentence in _words_in_sentences(reference):
            key = _key(word)
            used[key] += 1
            # A word whose case is its own (SOLAR, GPT-4o, a name inside a sentence) is heard
            # only as written, and kept so; the base model's "solar" for it is a miss to learn.
            if _cased(word, starts_sentence):
                missed[key] += word not in heard
                spelling[key] = word
                cased.add(key)
            else:
                missed[key] += key not in heard_keys
                spelling.setdefault(key, word)
    found = [
        spelling[key]
        for key in sorted(missed, key=lambda k: -missed[k])  # stable: ties keep text order
        if missed[key]
        and missed[key] >= MISSED_SHARE * used[key]
        and _rare(spelling[key], tokenizer, as_written=key in cased)
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


def _words_in_sentences(text: str) -> list[tuple[str, bool]]:
    """The words of `text`, each with whether it starts a sentence or a line (its capital is
    then the sentence's or the line's, not the word's)."""
    found, end = [], None
    for match in WORD.finditer(text):
        starts = end is None or bool(SENTENCE_OR_LINE_END.search(text[end : match.start()]))
        found.append((match.group(), starts))
        end = match.end()
    return found


def _cased(word: str, starts_sentence: bool) -> bool:
    """Whether a word's case is part of its spelling: a capital after its first letter
    (SOLAR, GPT-4o, iPhone), or a capital first letter inside a sentence (a name)."""
    return any(c.isupper() for c in word[1:]) or (word[:1].isupper() and not starts_sentence)


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


def _rare(word: str, tokenizer, as_written: bool = False) -> bool:
    """Not a common word: no casing of it, with or without a leading space, is a single token
    of the tokenizer (a multilingual tokenizer splits " today" but keeps " Today" whole).
    `as_written`: only the word's own casing counts, for a word whose case is its spelling
    ("SOLAR" is rare where "solar" is not)."""
    if len(word) < 3 or word.isdigit():
        return False
    casings = {word} if as_written else {word, word.lower(), word.capitalize()}
    return all(
        len(tokenizer.encode(space + w, add_special_tokens=False)) >= 2
        for w in casings
        for space in ("", " ")
    )
