"""Pronunciation control: the studio's lexicon, inline markup and an SSML subset.

The lexicon (`Lexicon`) keeps, per language, how a word is said: its phonemes (IPA, for engines
that take phonemes: Kokoro, Piper) and/or a respelling (plain text said instead of the word, for
every other engine, and for phoneme engines when no phonemes are given). Rows live in
`pronunciations.db` (SQLite) in the studio's data folder. An entry for "en" applies to en-us and
en-gb; a variant's own entry wins over it.

Speech text may carry markup, read by `speech_segments` (pure: no engine, no lexicon):
- inline, anywhere: `[word](/ipa/)` says `word` with those phonemes, `[pause:1.5s]` / `[pause:500ms]`
  is a silence;
- SSML, a text that starts with `<speak`: `<break time="500ms"/>` (or `strength`), `<sub
  alias="...">`, `<phoneme alphabet="ipa" ph="...">word</phoneme>`, `<prosody rate="...">`. It is
  parsed with expat, refusing any DOCTYPE (so no entity is ever declared or expanded); every error
  names its line and column. Inline marks work in its text too.

A parsed text is a list of `Segment`s (text, speed factor, pause after, inline pronunciations);
the speech service speaks them in order.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

from engines.text import canonical_language, is_cjk
from studio.errors import BadInput, TooLarge

LEXICON_LANGUAGES = ("en", "en-us", "en-gb", "ja", "zh")
MAX_ENTRIES = 2000
# The patterns are spelled with explicit ranges (no \w, \s): they are also the OpenAPI document's,
# and JSON Schema reads \w and \s as ASCII only. Matched whole (`fullmatch`), as JSON Schema does.
_CONTROLS = r"\x00-\x1f\x7f-\x9f"
_SPACES = r"\x20\xa0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff"
_MARKUP = r"\[\](){}<>/\\"
_PUNCTUATION = r"!\"#$%&*+,:;=?@^_`|~"  # ASCII's, but for ' . - (inside words: O'Brien, Dr., T-Mobile)
# A word as the engines' tokenisers see one: no spaces, markup or ASCII punctuation but ' . - inside.
WORD = re.compile(
    rf"^[^{_CONTROLS}{_SPACES}{_MARKUP}{_PUNCTUATION}'.\-][^{_CONTROLS}{_SPACES}{_MARKUP}{_PUNCTUATION}]{{0,63}}$"
)
# Phonemes as the engines' G2P writes them: no spaces, no markup characters.
PHONEMES = re.compile(rf"^[^{_CONTROLS}{_SPACES}{_MARKUP}]{{1,128}}$")
# A respelling: plain text (spaces inside allowed), no markup characters.
RESPELLING = re.compile(
    rf"^[^{_CONTROLS}{_SPACES}{_MARKUP}](?:[^{_CONTROLS}{_MARKUP}]{{0,126}}[^{_CONTROLS}{_SPACES}{_MARKUP}])?$"
)

MAX_PAUSE_S = 10.0
MAX_TOTAL_PAUSE_S = 120.0  # silence is memory too: a text of pauses cannot ask for hours of it
MAX_SEGMENTS = 500
SPEED_RANGE = (0.25, 4.0)
RATES = {"x-slow": 0.6, "slow": 0.75, "medium": 1.0, "fast": 1.3, "x-fast": 1.6}
STRENGTHS = {"none": 0.0, "x-weak": 0.25, "weak": 0.5, "medium": 0.75, "strong": 1.0, "x-strong": 1.25}
SSML_TAGS = ("speak", "break", "sub", "phoneme", "prosody")
_SSML_ATTRIBUTES = {
    "speak": None,  # any (version, xmlns, xml:lang): they change nothing here
    "break": {"time", "strength"},
    "sub": {"alias"},
    "phoneme": {"alphabet", "ph"},
    "prosody": {"rate"},
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$", re.IGNORECASE)
_INLINE = re.compile(
    r"\[(?P<word>[^\[\]\n]{1,64})\]\(/(?P<ipa>[^/\n]{1,128})/\)"
    r"|\[pause:\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>ms|s)\s*\]",
    re.IGNORECASE,
)
# A pause mark must be whole (a 422 otherwise); a link-like [a](/b/c) that is no mark is just text.
_PAUSE_START = re.compile(r"\[pause:", re.IGNORECASE)


@dataclass(frozen=True)
class Segment:
    """A stretch of text spoken at one speed, the silence after it, and its inline pronunciations
    (word in lower case -> IPA)."""

    text: str
    speed: float = 1.0
    pause_after: float = 0.0
    pronunciations: Mapping[str, str] = field(default_factory=dict)


def has_markup(text: str) -> bool:
    """Whether `text` is SSML or holds inline marks (`[word](/ipa/)`, `[pause:1s]`)."""
    return is_ssml(text) or bool(_INLINE.search(text) or _PAUSE_START.search(text))


def is_ssml(text: str) -> bool:
    head = text.lstrip()[:6].lower()
    return head.startswith("<speak") or head.startswith("<?xml")


def speech_segments(text: str) -> list[Segment]:
    """`text` as segments to speak in order: SSML when it starts with `<speak`, else plain text with
    inline marks. Raises BadInput (422) naming the position and what is wrong."""
    if is_ssml(text):
        builder = _Segments(collapse=True)
        _Ssml(builder).parse(text)
    else:
        builder = _Segments(collapse=False)
        _inline(text, builder)
    return builder.finish()


def check_word(word: str) -> str:
    """The word as entries are keyed (lower case), or BadInput saying what a word may be."""
    if not isinstance(word, str) or not WORD.fullmatch(word):
        raise BadInput(
            f"word {_shown(word)} is not one word: 1-64 characters with no spaces, brackets, slashes or "
            "punctuation other than ' . - inside (O'Brien, Dr., T-Mobile)",
            "bad_word",
        )
    return word.lower()


def check_phonemes(phonemes: str, where: str = "phonemes") -> str:
    if not isinstance(phonemes, str) or not PHONEMES.fullmatch(phonemes) or not _encodable(phonemes):
        raise BadInput(
            f"{where} {_shown(phonemes)} are not IPA for one word: 1-128 characters, no spaces, none of "
            "[ ] ( ) { } < > / \\",
            "bad_phonemes",
        )
    return phonemes


def check_respelling(respelling: str) -> str:
    if not isinstance(respelling, str) or not RESPELLING.fullmatch(respelling) or not _encodable(respelling):
        raise BadInput(
            f"respelling {_shown(respelling)} is not plain text: 1-128 characters, no markup characters "
            "([ ] ( ) { } < > / \\), not starting or ending with a space",
            "bad_respelling",
        )
    return respelling


def lexicon_language(language: str) -> str:
    """A lexicon's language code: "en" (both English variants), "en-us", "en-gb", "ja" or "zh"."""
    if isinstance(language, str) and language.strip().lower() == "en":
        return "en"
    try:
        code = canonical_language(language)
    except ValueError:
        code = None
    if code is None:
        raise BadInput(
            f"language {_shown(language)} is not a lexicon language: use {', '.join(LEXICON_LANGUAGES)}",
            "bad_language",
        )
    return code


def _encodable(text: str) -> bool:
    """False for text with a lone surrogate (JSON can carry one; UTF-8, and so SQLite, cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: object, limit: int = 40) -> str:
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# ---- the lexicon ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    word: str
    language: str
    phonemes: str | None = None
    respelling: str | None = None
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Pronouncing:
    """What the lexicon says for a text's languages: phonemes and respellings by word (lower case)."""

    phonemes: dict[str, str]
    respellings: dict[str, str]


class Lexicon:
    """Word -> phonemes and/or respelling per language, in SQLite; survives restarts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pronunciations (word TEXT NOT NULL, language TEXT NOT NULL, "
            "phonemes TEXT, respelling TEXT, updated_at REAL NOT NULL, PRIMARY KEY (word, language))"
        )
        self._revision: str | None = None

    def list(self, language: str | None = None) -> list[Entry]:
        """Every entry (or one language's, as stored: "en" lists the entries for both variants)."""
        query, args = "SELECT word, language, phonemes, respelling, updated_at FROM pronunciations", ()
        if language is not None:
            query, args = query + " WHERE language = ?", (lexicon_language(language),)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY word, language", args).fetchall()
        return [Entry(*row) for row in rows]

    def put(
        self, word: str, language: str, phonemes: str | None = None, respelling: str | None = None
    ) -> Entry:
        """Add or replace the entry for `word` in `language`; it needs phonemes, a respelling or both."""
        key, code = check_word(word), lexicon_language(language)
        if phonemes is None and respelling is None:
            raise BadInput("give the word's phonemes (IPA), a respelling, or both", "no_pronunciation")
        entry = Entry(
            key,
            code,
            check_phonemes(phonemes) if phonemes is not None else None,
            check_respelling(respelling) if respelling is not None else None,
            time.time(),
        )
        with self._lock:
            exists = self._db.execute(
                "SELECT 1 FROM pronunciations WHERE word = ? AND language = ?", (key, code)
            ).fetchone()
            count = self._db.execute("SELECT count(*) FROM pronunciations").fetchone()[0]
            if not exists and count >= MAX_ENTRIES:
                raise TooLarge(
                    f"the lexicon holds its limit of {MAX_ENTRIES} entries; delete some first", "lexicon_full"
                )
            self._db.execute(
                "INSERT OR REPLACE INTO pronunciations VALUES (?, ?, ?, ?, ?)",
                (entry.word, entry.language, entry.phonemes, entry.respelling, entry.updated_at),
            )
            self._revision = None
        return entry

    def delete(self, word: str, language: str) -> bool:
        """Remove the entry; False when there was none (deleting is idempotent)."""
        key, code = check_word(word), lexicon_language(language)
        with self._lock:
            gone = self._db.execute(
                "DELETE FROM pronunciations WHERE word = ? AND language = ?", (key, code)
            ).rowcount
            self._revision = None
        return bool(gone)

    def for_languages(self, languages: Iterable[str]) -> Pronouncing:
        """The entries that apply to text in `languages` (studio codes): "en" ones for either English,
        a variant's own over them."""
        codes = set(languages)
        if not codes:
            return Pronouncing({}, {})
        wanted = codes | ({"en"} if any(code.startswith("en") for code in codes) else set())
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute(
                f"SELECT word, language, phonemes, respelling FROM pronunciations WHERE language IN ({marks}) "
                "ORDER BY language = 'en' DESC",  # the general English entries first: variants override
                tuple(wanted),
            ).fetchall()
        phonemes: dict[str, str] = {}
        respellings: dict[str, str] = {}
        for word, _, said, respelled in rows:
            if said is not None:
                phonemes[word] = said
            if respelled is not None:
                respellings[word] = respelled
        return Pronouncing(phonemes, respellings)

    def revision(self) -> str:
        """Changes whenever an entry does (the speech cache keys on it: new entries, new audio)."""
        with self._lock:
            if self._revision is None:
                rows = self._db.execute(
                    "SELECT word, language, phonemes, respelling FROM pronunciations ORDER BY word, language"
                ).fetchall()
                self._revision = hashlib.sha256(repr(rows).encode()).hexdigest()[:16]
            return self._revision


def respelled(text: str, respellings: Mapping[str, str], keep: Iterable[str] = ()) -> str:
    """`text` with each word that has a respelling replaced by it (whole words, any case; CJK words
    wherever they occur, having no spaces around them); words in `keep` are left as written."""
    kept = {word.lower() for word in keep}
    words = sorted((w for w in respellings if w not in kept), key=len, reverse=True)
    if not words:
        return text
    alternatives = "|".join(re.escape(w) if is_cjk(w) else rf"(?<!\w){re.escape(w)}(?!\w)" for w in words)
    return re.sub(alternatives, lambda match: respellings[match.group().lower()], text, flags=re.IGNORECASE)


# ---- markup -----------------------------------------------------------------------------------
class _Segments:
    """Collects text, pronunciations and pauses into segments: a new one at each pause or speed change."""

    def __init__(self, collapse: bool) -> None:
        self.collapse = collapse  # SSML: runs of white space are one space (XML's text layout means nothing)
        self.segments: list[Segment] = []
        self._text: list[str] = []
        self._speed = 1.0
        self._pronunciations: dict[str, str] = {}
        self._paused = 0.0  # all pauses so far

    def text(self, text: str, speed: float = 1.0) -> None:
        if speed != self._speed and "".join(self._text).strip():
            self._close(0.0)
        self._speed = speed
        self._text.append(text)

    def pronounce(self, word: str, phonemes: str, speed: float = 1.0) -> None:
        self.text(word, speed)
        self._pronunciations[word.lower()] = phonemes

    def pause(self, seconds: float, where: str) -> None:
        if seconds > MAX_PAUSE_S:
            raise BadInput(f"{where}: a pause of {seconds:g} s is longer than {MAX_PAUSE_S:g} s", "bad_pause")
        self._paused += seconds
        if self._paused > MAX_TOTAL_PAUSE_S:
            raise BadInput(f"{where}: pauses add up to more than {MAX_TOTAL_PAUSE_S:g} s", "bad_pause")
        self._close(seconds)

    def _close(self, pause: float) -> None:
        joined = "".join(self._text)
        text = " ".join(joined.split()) if self.collapse else joined.strip()
        self._text = []
        if not text and self.segments:  # a pause right after another: they add up
            last = self.segments[-1]
            self.segments[-1] = Segment(last.text, last.speed, last.pause_after + pause, last.pronunciations)
            return
        self.segments.append(Segment(text, self._speed, pause, self._pronunciations))
        self._pronunciations = {}
        if len(self.segments) > MAX_SEGMENTS:
            raise BadInput(
                f"the text has more than {MAX_SEGMENTS} parts (pauses and speed changes); use fewer",
                "too_many_parts",
            )

    def finish(self) -> list[Segment]:
        if "".join(self._text).strip():
            self._close(0.0)
        return self.segments


def _inline(text: str, builder: _Segments, speed: float = 1.0, within: str = "") -> None:
    """Text with `[word](/ipa/)` and `[pause:1.5s]` marks; a broken mark is a 422 naming its
    character offset (`within`: where the text starts, in SSML)."""
    position = 0
    for match in _INLINE.finditer(text):
        _plain(text, position, match.start(), builder, speed, within)
        where = f"{within}character {match.start() + 1}"
        if match["word"] is not None:
            word = match["word"]
            if not WORD.fullmatch(word):
                raise BadInput(
                    f"{where}: [{word[:40]}] is not one word; mark each word with its own /phonemes/",
                    "bad_markup",
                )
            builder.pronounce(word, check_phonemes(match["ipa"], f"{where}: phonemes"), speed)
        else:
            amount = float(match["amount"])
            builder.pause(amount / 1000 if match["unit"].lower() == "ms" else amount, where)
        position = match.end()
    _plain(text, position, len(text), builder, speed, within)


def _plain(text: str, start: int, end: int, builder: _Segments, speed: float, within: str) -> None:
    if broken := _PAUSE_START.search(text, start, end):
        raise BadInput(
            f"{within}character {broken.start() + 1}: a broken mark near "
            f"{text[broken.start() : broken.start() + 20]!r}; write [pause:1.5s] or [pause:500ms]",
            "bad_markup",
        )
    builder.text(text[start:end], speed)


class _Ssml:
    """The SSML subset on expat. No DOCTYPE is allowed: no entity is declared, none expanded
    (billion laughs, external entities); only XML's own five entities are known."""

    def __init__(self, builder: _Segments) -> None:
        self.builder = builder
        self.parser = expat.ParserCreate()
        self.parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        self.parser.StartDoctypeDeclHandler = self._doctype
        self.parser.EntityDeclHandler = self._doctype
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._characters
        self.parser.buffer_text = True
        self.stack: list[tuple[str, Any]] = []  # (tag, its value: speed, alias, phonemes)
        self.inner: list[str] = []  # the text inside <sub> / <phoneme>
        self.unknown: dict[str, str] = {}  # unknown tag -> where first seen

    def parse(self, text: str) -> None:
        try:
            self.parser.Parse(text, True)
        except expat.ExpatError as error:
            raise BadInput(
                f"SSML line {error.lineno}, column {error.offset + 1}: {expat.ErrorString(error.code)}",
                "bad_ssml",
            ) from None
        if self.unknown:
            named = ", ".join(f"<{tag}> ({where})" for tag, where in self.unknown.items())
            raise BadInput(
                f"SSML tags not supported: {named}; supported: {', '.join(f'<{t}>' for t in SSML_TAGS)}",
                "unknown_ssml_tag",
            )

    def _where(self) -> str:
        return f"SSML line {self.parser.CurrentLineNumber}, column {self.parser.CurrentColumnNumber + 1}"

    def _fail(self, message: str) -> BadInput:
        return BadInput(f"{self._where()}: {message}", "bad_ssml")

    def _doctype(self, *_: object) -> None:
        raise self._fail("a DOCTYPE or entity declaration is not allowed")

    @property
    def _speed(self) -> float:
        speed = 1.0
        for tag, value in self.stack:
            if tag == "prosody":
                speed *= value
        return min(max(speed, SPEED_RANGE[0]), SPEED_RANGE[1])

    def _start(self, tag: str, attributes: dict[str, str]) -> None:
        if tag not in SSML_TAGS:
            self.unknown.setdefault(tag, self._where().removeprefix("SSML "))
            self.stack.append((tag, None))
            return
        if (tag == "speak") != (not self.stack):
            raise self._fail(
                "<speak> must hold the whole text, once" if self.stack else f"<{tag}> outside <speak>"
            )
        if self.stack and self.stack[-1][0] in ("sub", "phoneme", "break"):
            raise self._fail(f"<{self.stack[-1][0]}> holds text only, not <{tag}>")
        allowed = _SSML_ATTRIBUTES[tag]
        if allowed is not None and (extra := sorted(set(attributes) - allowed)):
            raise self._fail(f"<{tag}> takes {', '.join(sorted(allowed))}, not {', '.join(extra)}")
        value: Any = None
        if tag == "break":
            self.builder.pause(self._break(attributes), self._where())
        elif tag == "sub":
            if not attributes.get("alias", "").strip():
                raise self._fail('<sub> needs alias="what to say"')
            value = attributes["alias"]
        elif tag == "phoneme":
            if attributes.get("alphabet", "ipa").lower() != "ipa":
                raise self._fail(
                    f"<phoneme> alphabet '{attributes['alphabet'][:20]}' is not supported; use ipa"
                )
            if "ph" not in attributes:
                raise self._fail('<phoneme> needs ph="IPA"')
            value = (self._where(), check_phonemes(attributes["ph"], f"{self._where()}: <phoneme> ph"))
        elif tag == "prosody":
            value = self._rate(attributes.get("rate", "medium"))
        self.stack.append((tag, value))
        self.inner = []

    def _end(self, tag: str) -> None:
        _, value = self.stack.pop()
        inner = "".join(self.inner)
        if tag == "sub":
            self.builder.text(value, self._speed)
        elif tag == "phoneme":
            where, phonemes = value
            word = inner.strip()
            if not WORD.fullmatch(word):
                raise BadInput(
                    f"{where}: <phoneme> marks one word, not {_shown(word)}; give each word its own",
                    "bad_ssml",
                )
            self.builder.pronounce(word, phonemes, self._speed)
        if tag in ("sub", "phoneme"):
            self.inner = []

    def _characters(self, data: str) -> None:
        if not self.stack:
            return
        tag = self.stack[-1][0]
        if tag in ("sub", "phoneme"):
            self.inner.append(data)
        elif tag == "break" and data.strip():
            raise self._fail('<break> holds no text: write <break time="500ms"/>')
        elif tag in SSML_TAGS:
            _inline(data, self.builder, self._speed, f"{self._where()}, ")

    def _break(self, attributes: dict[str, str]) -> float:
        if "time" in attributes:
            match = _DURATION.match(attributes["time"])
            if not match:
                raise self._fail(f"<break> time {_shown(attributes['time'])} is not like 500ms or 1.5s")
            amount = float(match[1])
            return amount / 1000 if match[2].lower() == "ms" else amount
        strength = attributes.get("strength", "medium")
        if strength not in STRENGTHS:
            raise self._fail(f"<break> strength {_shown(strength)} is not one of {', '.join(STRENGTHS)}")
        return STRENGTHS[strength]

    def _rate(self, rate: str) -> float:
        value = rate.strip().lower()
        try:
            factor = (
                RATES[value]
                if value in RATES
                else (float(value[:-1]) / 100 if value.endswith("%") else float(value))
            )
        except ValueError:
            factor = -1.0
        if not SPEED_RANGE[0] <= factor <= SPEED_RANGE[1]:
            raise self._fail(
                f"<prosody> rate {_shown(rate)} is not {', '.join(RATES)}, a percentage (25%-400%) or a "
                "factor (0.25-4)"
            )
        return factor
