"""Caption normalisation and the Vocabulary: the one place that turns text into ids and back."""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

from captioner.errors import CaptionerError
from captioner.io import atomic_write_text

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)

_NOT_WORD = re.compile(r"[^a-z0-9' ]+")
_SPACES = re.compile(r"\s+")


def normalise_caption(text: str) -> list[str]:
    """Lower-case, drop punctuation and stray characters, split into words."""
    text = text.lower().replace("-", " ")
    text = _NOT_WORD.sub(" ", text)
    words = [word.strip("'") for word in _SPACES.split(text)]
    return [word for word in words if word]


class Vocabulary:
    """Word <-> id mapping; ids 0..3 are the special tokens."""

    def __init__(self, words: Sequence[str]):
        if tuple(words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise CaptionerError(f"vocabulary must start with {SPECIAL_TOKENS}, got {tuple(words[:4])}")
        self.words = list(words)
        self.index = {word: position for position, word in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise CaptionerError("vocabulary has duplicate words")
        self.pad_id, self.start_id, self.end_id, self.unk_id = range(4)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def never_emitted_ids(self) -> tuple[int, ...]:
        """Tokens a generated caption must not contain: <pad>, <start> and <unk> (it is not a word)."""
        return (self.pad_id, self.start_id, self.unk_id)

    @cached_property
    def _left_right_swap(self) -> dict[int, int]:
        """id of "left" -> id of "right" and back, for the words this vocabulary has both of."""
        left, right = self.index.get("left"), self.index.get("right")
        return {left: right, right: left} if left is not None and right is not None else {}

    def mirrored(self, ids: Sequence[int]) -> list[int]:
        """The caption of the left-right flipped photo: "left" and "right" swap places."""
        return [self._left_right_swap.get(token_id, token_id) for token_id in ids]

    @classmethod
    def build(cls, captions: Iterable[Sequence[str]], *, min_count: int = 5) -> Vocabulary:
        """Keep words seen at least `min_count` times, most frequent first (ties alphabetical)."""
        counts = Counter(word for caption in captions for word in caption)
        kept = sorted((word for word, count in counts.items() if count >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIAL_TOKENS, *kept])

    def encode(self, words: Sequence[str], *, max_length: int | None = None) -> list[int]:
        """Words -> [<start>, ids..., <end>], unknown words as <unk>, cut to `max_length` words."""
        words = words[:max_length] if max_length else words
        return [self.start_id, *(self.index.get(word, self.unk_id) for word in words), self.end_id]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> words, stopping at <end> and skipping <start>/<pad>."""
        words = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id == self.end_id:
                break
            if token_id in (self.start_id, self.pad_id):
                continue
            words.append(self.words[token_id])
        return words

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps({"words": self.words}, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            words = json.loads(Path(path).read_text())["words"]
        except FileNotFoundError:
            raise CaptionerError(f"vocabulary file missing: {path}") from None
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise CaptionerError(f"vocabulary file is corrupt: {path}") from None
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise CaptionerError(f"vocabulary file is corrupt: {path}")
        try:
            return cls(words)
        except CaptionerError as error:  # say which file is wrong, not only what
            raise CaptionerError(f"vocabulary file is corrupt: {path} ({error})") from None
