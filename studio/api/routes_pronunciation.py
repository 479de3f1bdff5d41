"""Pronunciation lexicon routes: list, add or replace, delete entries (studio/services/pronunciation.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query

from studio.api.deps import caller, get_studio
from studio.api.openapi import links
from studio.api.schemas import (
    LexiconLanguage,
    PronunciationBody,
    PronunciationDeleted,
    PronunciationList,
    PronunciationOut,
    errors,
)
from studio.core import Studio
from studio.services.pronunciation import WORD, check_word

router = APIRouter(tags=["pronunciation"], dependencies=[Depends(caller)], responses=errors(400, 401, 422))

Word = Path(
    description="one word (no spaces; of punctuation only ' . - inside); any case, kept in lower case",
    json_schema_extra={"pattern": WORD.pattern},
)
ENTRY_LINKS = links(
    {"word": "$response.body#/word", "language": "$response.body#/language"}, "delete_pronunciation"
)


@router.get("/api/v1/pronunciations")
def list_pronunciations(
    language: LexiconLanguage | None = Query(
        None, description="only this language's entries (\"en\": both variants')"
    ),
    studio: Studio = Depends(get_studio),
) -> PronunciationList:
    """The lexicon: how words are said, per language."""
    entries = studio.pronunciations.list(language)
    return PronunciationList(pronunciations=[PronunciationOut(**entry.to_dict()) for entry in entries])


@router.put("/api/v1/pronunciations/{word}", responses=errors(413) | ENTRY_LINKS)
def put_pronunciation(
    body: PronunciationBody, word: str = Word, studio: Studio = Depends(get_studio)
) -> PronunciationOut:
    """Add or replace how `word` is said in `language`: speech from the routes and tabs then says it
    so (phonemes on Kokoro and Piper, the respelling on other engines)."""
    entry = studio.pronunciations.put(word, body.language, body.phonemes, body.respelling)
    return PronunciationOut(**entry.to_dict())


@router.delete("/api/v1/pronunciations/{word}")
def delete_pronunciation(
    word: str = Word,
    language: LexiconLanguage = Query(description="the entry's language, as it was added"),
    studio: Studio = Depends(get_studio),
) -> PronunciationDeleted:
    """Remove the entry; `deleted: false` when there was none."""
    deleted = studio.pronunciations.delete(word, language)
    return PronunciationDeleted(word=check_word(word), language=language, deleted=deleted)
