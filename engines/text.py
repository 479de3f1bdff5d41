"""Sentence splitting shared by every engine (Latin and CJK punctuation)."""

from __future__ import annotations

import re

# Split after ., !, ? (followed by space) and after CJK sentence marks; keep the mark with its sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|(?<=[。！？])|\n+")
_CLAUSE_END = re.compile(r"(?<=[,;:、，；])\s*")
_ABBREVIATIONS = ("Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "St.", "vs.", "e.g.", "i.e.", "etc.", "No.")


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """Sentences of `text`, each at most `max_chars` (long ones are cut at clauses, then words)."""
    protected = text
    for i, abbr in enumerate(_ABBREVIATIONS):
        protected = protected.replace(abbr, f"\x00{i}\x00")
    pieces = [p.strip() for p in _SENTENCE_END.split(protected)]
    sentences = []
    for piece in pieces:
        if not piece:
            continue
        for i, abbr in enumerate(_ABBREVIATIONS):
            piece = piece.replace(f"\x00{i}\x00", abbr)
        sentences.extend(_limit(piece, max_chars))
    return [s for s in sentences if any(ch.isalnum() for ch in s)]


def _limit(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    out: list[str] = []
    current = ""
    for clause in _CLAUSE_END.split(sentence):
        for word in _words(clause, max_chars):
            if current and len(current) + 1 + len(word) > max_chars:
                out.append(current)
                current = word
            else:
                current = f"{current} {word}".strip() if current else word
    if current:
        out.append(current)
    return out


def _words(clause: str, max_chars: int) -> list[str]:
    if len(clause) <= max_chars:
        return [clause]
    words = clause.split()
    if len(words) == 1:  # CJK text has no spaces: cut by characters
        return [clause[i : i + max_chars] for i in range(0, len(clause), max_chars)]
    return words


def detect_language(text: str) -> str | None:
    """'ja' for text with kana, 'zh' for Han characters without kana, None for anything else."""
    if re.search(r"[\u3040-\u30ff]", text):
        return "ja"
    if re.search(r"[\u4e00-\u9fff]", text):
        return "zh"
    return None
