"""Find photos by words: SQLite FTS5 over captions, their alternatives and the encoder's recognised words.

Stemming (FTS5's porter tokenizer) lets "dogs running" find "a dog runs"; BM25 ranks the matches, the caption
counting more than its alternatives and the recognised words. Any query text is safe: it is cut into plain
words (FTS5 operators, quotes, `*`, `NEAR`, parentheses are never passed through), and a query with no words
finds nothing rather than failing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from captioner.library.store import COLUMNS, Library, Photo, _photo

# words too common in captions to rank by; kept when a query has nothing else
STOPWORDS = frozenset("a an the of on in at to with and is are its his her their by for from".split())
WEIGHTS = (3.0, 1.0, 1.5)  # bm25 column weights: caption, alternatives, recognised
_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str, *, every: bool = False) -> str | None:
    """Plain words of any text as an FTS5 query matching photos with any of them (with every=True: all of them);
    None when the text has no words."""
    words = [word.lower() for word in _WORD.findall(text)]
    meaningful = [word for word in words if word not in STOPWORDS] or words
    if not meaningful:
        return None
    return (" AND " if every else " OR ").join(f'"{word}"' for word in dict.fromkeys(meaningful))  # quoted: never an operator


@dataclass
class Hit:
    photo: Photo
    rank: float  # BM25 (lower is better, as SQLite returns it)


def search(library: Library, text: str, *, limit: int = 20) -> list[Hit]:
    """The photos with every word of the text first (by BM25), then those with some of them."""
    if fts_query(text) is None or limit < 1:
        return []
    hits: dict[str, Hit] = {}
    for every in (True, False):
        for hit in _matches(library, fts_query(text, every=every), limit):
            hits.setdefault(hit.photo.path, hit)
        if len(hits) >= limit:
            break
    return list(hits.values())[:limit]


def _matches(library: Library, query: str, limit: int) -> list[Hit]:
    columns = ", ".join(f"photos.{name}" for name in COLUMNS)
    rows = library.connection.execute(
        f"SELECT {columns}, bm25(photos_fts, ?, ?, ?) AS rank FROM photos_fts JOIN photos ON photos.id = photos_fts.rowid "
        "WHERE photos_fts MATCH ? ORDER BY rank LIMIT ?", (*WEIGHTS, query, limit))
    return [Hit(_photo(row), row["rank"]) for row in rows]
