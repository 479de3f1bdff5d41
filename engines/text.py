"""Text as engines read it: sentence splitting (Latin and CJK punctuation), language codes and
detection, and the normaliser that spells out numbers, money, times and titles, also word by word
(each written word with what is said for it, for word timestamps)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

# Split after ., !, ? (with up to two closing quotes or brackets, followed by space), after CJK
# sentence marks (with any closing quote), after Latin marks and ellipses glued to CJK text, and at
# line breaks; the mark and its closers stay with their sentence.
_CLOSERS = "”’」』）)》"
_LATIN_CLOSERS = "\"'”’)\\]"  # inside [...]
_SENTENCE_END = re.compile(
    rf"(?:(?<=[.!?…])|(?<=[.!?…][{_LATIN_CLOSERS}])|(?<=[.!?…][{_LATIN_CLOSERS}]{{2}}))\s+"
    rf"|(?:(?<=[。！？；])|(?<=[。！？；][{_CLOSERS}]))(?![{_CLOSERS}。！？；])"
    r"|(?<=[!?…])(?=[\u3040-\u30ff\u3400-\u9fff])"
    r"|\n+"
)
_CLAUSE_END = re.compile(r"(?<=[,;:、，；：])\s*")
_ABBREVIATIONS = ("Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "St.", "vs.", "e.g.", "i.e.", "etc.", "No.")
_ABBREVIATION_MARK = 0xE000  # first private-use code point
CJK_WIDTH = 3  # a CJK character is about as much speech as three Latin ones


def speakable(text: str) -> str:
    """`text` without what no engine can say: control, format and zero-width characters, private or
    unassigned code points, and pictographs (emoji, dingbats; the degree sign stays); line breaks
    and tabs stay."""
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in "\n\t":
            kept.append(ch)
        elif (category in _UNSPEAKABLE and ch not in _SPOKEN_SYMBOLS) or ch in _EMOJI_JOINERS:
            kept.append(" " if category == "Cc" else "")
        else:
            kept.append(ch)
    return re.sub(r" {2,}", " ", "".join(kept))


_UNSPEAKABLE = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "So"})  # So: emoji, arrows, dingbats, ...
_EMOJI_JOINERS = "\ufe0e\ufe0f\u20e3"  # variation selectors and the keycap mark (category Mn)
_SPOKEN_SYMBOLS = "°"  # symbols (So) that are read: "40°C" is "forty degrees Celsius"


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """Sentences of `text` (made `speakable` first), each at most `max_chars` wide (a CJK character
    counts `CJK_WIDTH`): long ones are cut at clauses (，、, ...), then at words (CJK: characters).
    Pieces with no letter or digit are left out: `[]` means there is nothing to say."""
    protected = speakable(text)
    # One private-use character per abbreviation: `speakable` removed any the text had, and unlike a
    # multi-character marker one cannot run into its neighbour ("Mrs.0Mr.").
    for i, abbr in enumerate(_ABBREVIATIONS):
        protected = protected.replace(abbr, chr(_ABBREVIATION_MARK + i))
    pieces = [p.strip() for p in _SENTENCE_END.split(protected)]
    sentences = []
    for piece in pieces:
        if not piece:
            continue
        for i, abbr in enumerate(_ABBREVIATIONS):
            piece = piece.replace(chr(_ABBREVIATION_MARK + i), abbr)
        sentences.extend(_limit(piece, max_chars))
    return [s for s in sentences if any(ch.isalnum() for ch in s)]


# A first sentence wider than this is spoken as two chunks, so the first audio comes sooner: its
# head up to a clause mark (at least QUICK_HEAD_MIN wide, about half a second of speech), or, with
# no mark, up to a word that starts a clause.
QUICK_START_WIDTH = 45
QUICK_HEAD_MIN = 10
_CLAUSE_WORDS = frozenset(
    {"and", "but", "or", "so", "because", "when", "where", "which", "while", "that", "if", "as"}
    | {"before", "after", "until", "since", "though", "although"}
)


def quick_start_head(sentence: str) -> str | None:
    """The first piece of a long `sentence` to speak on its own (a prefix of it, cut at a clause
    mark, else before a clause word such as "because"; never inside a word); None when the sentence
    is short or has no such place early enough."""
    if _width(sentence) <= QUICK_START_WIDTH:
        return None
    for mark in _CLAUSE_END.finditer(sentence):
        head = sentence[: mark.start()].rstrip()
        if _width(head) > QUICK_START_WIDTH:
            break
        if _width(head) >= QUICK_HEAD_MIN and any(ch.isalnum() for ch in sentence[mark.end() :]):
            return head
    words = list(re.finditer(r"\S+", sentence))
    for word in words[2:8]:
        head = sentence[: word.start()].rstrip()
        if word.group().lower() in _CLAUSE_WORDS and QUICK_HEAD_MIN <= _width(head) <= QUICK_START_WIDTH:
            return head
    return None


def _width(text: str) -> int:
    return sum(CJK_WIDTH if is_cjk(ch) else 1 for ch in text)


def _joined(left: str, right: str) -> str:
    """Two pieces of a sentence put back together: a space between Latin words, none around CJK."""
    if not left:
        return right
    return left + right if is_cjk(left[-1]) or is_cjk(right[:1]) else f"{left} {right}"


def _limit(sentence: str, max_chars: int) -> list[str]:
    if _width(sentence) <= max_chars:
        return [sentence]
    out: list[str] = []
    current = ""
    for clause in _CLAUSE_END.split(sentence):
        for word in _words(clause, max_chars):
            if current and _width(_joined(current, word)) > max_chars:
                out.append(current)
                current = word
            else:
                current = _joined(current, word)
    if current:
        out.append(current)
    return out


def _words(clause: str, max_chars: int) -> list[str]:
    if _width(clause) <= max_chars:
        return [clause] if clause else []
    words: list[str] = []
    for word in clause.split():  # CJK text has no spaces: its "word" is cut by characters
        words.extend([word] if _width(word) <= max_chars else _cut(word, max_chars))
    return words


def _cut(word: str, max_chars: int) -> list[str]:
    """`word` cut into pieces at most `max_chars` wide (one character when it alone is wider)."""
    pieces, current, width = [], "", 0
    for ch in word:
        ch_width = _width(ch)
        if current and width + ch_width > max_chars:
            pieces.append(current)
            current, width = "", 0
        current, width = current + ch, width + ch_width
    return [*pieces, current] if current else pieces


# ---- languages ----------------------------------------------------------------------------
# The studio's language codes: "zh" (Mandarin), "ja", "en-us", "en-gb", and the other languages of
# Kokoro's voices and the common Piper ones. `None` everywhere means "auto": each sentence is
# detected by its script, a Latin-script one in the voice's own language (`latin_language`).
LANGUAGE_NAMES = {
    "zh": "Mandarin Chinese",
    "ja": "Japanese",
    "en-us": "English",
    "en-gb": "British English",
    "es": "Spanish",
    "fr-fr": "French",
    "it": "Italian",
    "pt-br": "Brazilian Portuguese",
    "de": "German",
    "hi": "Hindi",
}
_ALIASES = {  # the one-letter ones are Kokoro's language codes (the first letter of its voice ids)
    "zh": (
        "zh",
        "zh-cn",
        "zh-hans",
        "zh_cn",
        "cmn",
        "mandarin",
        "chinese",
        "中文",
        "汉语",
        "普通话",
        "zho",
        "chi",
        "z",
    ),
    "ja": ("ja", "ja-jp", "ja_jp", "jp", "jpn", "japanese", "日文", "日语", "日本語", "j"),
    "en-us": ("en", "en-us", "en_us", "eng", "english", "英文", "英语", "a"),
    "en-gb": ("en-gb", "en_gb", "en-gb-x-rp", "b"),
    "es": ("es", "es-es", "es_es", "es-mx", "es_mx", "es-419", "spa", "spanish", "español", "e"),
    "fr-fr": ("fr", "fr-fr", "fr_fr", "fra", "fre", "french", "français", "f"),
    "it": ("it", "it-it", "it_it", "ita", "italian", "italiano", "i"),
    "pt-br": ("pt", "pt-br", "pt_br", "por", "portuguese", "português", "p"),
    "de": ("de", "de-de", "de_de", "deu", "ger", "german", "deutsch"),
    "hi": ("hi", "hi-in", "hi_in", "hin", "hindi", "h"),
}
_CANONICAL = {alias: code for code, aliases in _ALIASES.items() for alias in aliases}
LANGUAGE_SPELLINGS = ("auto", *_CANONICAL)  # every spelling `canonical_language` takes (any case)
_NOT_LATIN = frozenset({"zh", "ja", "hi"})  # written in their own scripts; every other one in Latin letters
# Kana, without the katakana middle dot U+30FB: Chinese text writes names with it too ("达・芬奇").
_KANA = re.compile(r"[\u3040-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_DEVANAGARI = re.compile(r"[\u0900-\u097f]")


def canonical_language(value: str | None) -> str | None:
    """A language as the studio names it (a key of LANGUAGE_NAMES), or None for auto/empty.

    Accepts the common spellings clients send: ISO codes, "cmn", "Chinese", GPT-SoVITS's "中文" /
    "日文" / "英文", Kokoro's one-letter codes. Raises ValueError naming the choices for anything else.
    """
    if value is None or not str(value).strip() or str(value).strip().lower() == "auto":
        return None
    code = _CANONICAL.get(str(value).strip().lower())
    if code is None:
        raise ValueError(
            f"language '{value}' is not one the studio speaks: use auto or one of {', '.join(LANGUAGE_NAMES)}"
        )
    return code


def detect_language(text: str, context: str = "", latin: str = "en-us") -> str:
    """The language of one sentence by its script: kana -> "ja", Han without kana -> "zh",
    Devanagari -> "hi", else `latin` (the voice's own Latin-script language, `latin_language`).
    A Han-only sentence in a text (`context`) that has kana elsewhere is Japanese."""
    if _KANA.search(text):
        return "ja"
    if _HAN.search(text):
        return "ja" if context and _KANA.search(context) else "zh"
    if _DEVANAGARI.search(text):
        return "hi"
    return latin


def latin_language(own: str | None) -> str:
    """What a voice whose own language is `own` reads Latin-script text in when no language is named:
    its own (an ef_ Kokoro voice reads Spanish, a bf_ one British English), else English."""
    return own if own and own not in _NOT_LATIN else "en-us"


def foreign_script(text: str) -> str | None:
    """The script `text` is written in (e.g. "Thai", "Hangul", "Cyrillic") when it has letters but
    none in a script the studio speaks (Latin, Han, kana); None otherwise."""
    foreign = None
    for ch in text:
        if not ch.isalpha():
            continue
        if (
            ch.isascii()
            or "LATIN" in unicodedata.name(ch, "")
            or any(script.match(ch) for script in (_HAN, _KANA, _DEVANAGARI))
        ):
            return None
        foreign = foreign or unicodedata.name(ch, "UNKNOWN").split()[0].title()
    return foreign


def base_language(code: str) -> str:
    """ "zh", "ja", "en", "fr", ... for a studio language code (the family engines and ASR care about)."""
    return code.split("-")[0]


def is_cjk(text: str) -> bool:
    """Whether `text` is written in Chinese or Japanese characters (no spaces between words)."""
    return bool(_HAN.search(text) or _KANA.search(text))


# ---- normalisation --------------------------------------------------------------------------

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_INVISIBLE = re.compile(r"[\u200b\ufeff]")
_LATIN_PUNCTUATION = str.maketrans(
    {
        **{chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)},  # full-width ASCII forms
        "\u3000": " ",
        **dict.fromkeys("‘’‚‛′", "'"),
        **dict.fromkeys("“”„‟″", '"'),
        **dict.fromkeys("‐‑‒–−", "-"),
        **dict.fromkeys("—―", " - "),
        "…": "...",
    }
)
_TITLE_WORDS = {"Mr": "Mister", "Mrs": "Missus", "Dr": "Doctor", "Prof": "Professor", "St": "Saint"}
_TITLE = re.compile(r"\b(Mrs|Mr|Dr|Prof|St)\b\.?(?=\s+[A-Z])")
# ASCII digits only: the engines read no other (Arabic-Indic "١٢٣" stays unread, as espeak leaves it).
_NUMBER = r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?"
# a.m./p.m.; the final dot stays when it also ends the sentence.
_AM_PM = r"\s?([AaPp])\.?[Mm](?![A-Za-z])(?:\.(?!\s+[A-Z]|\s*$))?"
_SCALES = "thousand|million|billion|trillion"


def num2words(number: int, **options: str) -> str:
    """num2words' reading of `number`, imported on first use: engine workers import this module (via
    engines.base) in environments that have only numpy and psutil."""
    from num2words import num2words as read

    return read(number, **options)


_MAX_NAMED_DIGITS = 300  # num2words names numbers below 10**306; longer digit runs are read digit by digit
_MONEY_UNITS = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
}
_TEMPERATURE_UNITS = {"C": "Celsius", "F": "Fahrenheit"}


@dataclass(frozen=True)
class SpokenWord:
    """One written word of a sentence and what is said for it: `written` as the text has it, without
    the punctuation around it ("40-60°C"), `spoken` as said ("forty to sixty degrees Celsius");
    `before` and `after` are the punctuation around it, which the phonemizer reads for prosody."""

    written: str
    spoken: str
    before: str = ""
    after: str = ""

    @property
    def text(self) -> str:
        """What the phonemizer reads for this word: its spoken form with its punctuation."""
        return f"{self.before}{self.spoken}{self.after}"


def normalize_text(text: str, language: str = "en") -> str:
    """`text` as engines read it best, saying the same words.

    Everywhere: invisible characters go and whitespace collapses. Text without CJK characters also
    gets straight quotes, ASCII dashes and ellipsis, and ASCII for full-width forms (CJK text keeps
    its own punctuation). English text also gets titles (Dr. Smith -> Doctor Smith) and numbers,
    money, percentages, times, ordinals, years and temperatures spelled out.
    """
    spoken = "".join(piece.spoken for piece in _pieces(text, language))
    return re.sub(r"\s+", " ", spoken).strip()


def spoken_words(sentence: str, language: str = "en") -> list[SpokenWord]:
    """The words of `sentence` (split at spaces), each with what is said for it (`normalize_text`);
    a spelled-out span that covers a space ("$5 million") is one word. Punctuation alone is no
    word: it joins the word before it (or, first in the sentence, the one after it)."""
    tokens: list[list[_Piece]] = [[]]  # the pieces of each space-separated token
    for piece in _pieces(sentence, language):
        if not piece.expanded and piece.written.isspace():
            tokens.append([])
        else:
            tokens[-1].append(piece)
    words: list[SpokenWord] = []
    leading = ""  # punctuation before the first word
    for token in tokens:
        core = [i for i, piece in enumerate(token) if piece.expanded or _in_word(piece.written)]
        if not core:  # punctuation only (or nothing): read with its neighbour
            marks = "".join(piece.spoken for piece in token).strip()
            if marks and words:
                last = words[-1]
                words[-1] = SpokenWord(last.written, last.spoken, last.before, f"{last.after} {marks}")
            elif marks:
                leading = f"{leading}{marks} "
            continue
        first, last_index = core[0], core[-1] + 1
        written = "".join(piece.written for piece in token[first:last_index])
        said = "".join(piece.spoken for piece in token[first:last_index]).strip()
        before = leading + "".join(piece.spoken for piece in token[:first])
        after = "".join(piece.spoken for piece in token[last_index:])
        words.append(SpokenWord(written, said, before, after))
        leading = ""
    return words


def _in_word(ch: str) -> bool:
    """Whether a character belongs to a word (not to the punctuation around it)."""
    return ch.isalnum() or ch in "$€£%°&@#"


@dataclass
class _Piece:
    written: str  # as in the text
    spoken: str  # as said
    expanded: bool = False  # spelled out by a number form: the forms after leave it alone


def _pieces(text: str, language: str) -> list[_Piece]:
    """`text` as pieces, written and spoken: one per character, but one per spelled-out span."""
    latin = not _CJK.search(text)
    pieces = [
        _Piece(ch, "" if _INVISIBLE.match(ch) else ch.translate(_LATIN_PUNCTUATION) if latin else ch)
        for ch in text
    ]
    if latin and language.lower().startswith("en"):
        # Order matters: the specific forms go first, and each leaves words, never digits.
        for pattern, spell in ((_TITLE, _title), *_NUMBER_FORMS):
            pieces = _spelled(pieces, pattern, spell)
    return pieces


def _spelled(
    pieces: list[_Piece], pattern: re.Pattern[str], spell: Callable[[re.Match[str]], str]
) -> list[_Piece]:
    """`pieces` with each match of `pattern` in their spoken text (outside spans already spelled
    out) made one expanded piece: the written pieces it covers, said as `spell(match)`."""
    spoken = "".join(piece.spoken for piece in pieces)
    owner: list[int] = []  # the piece each character of `spoken` comes from
    for i, piece in enumerate(pieces):
        owner.extend([i] * len(piece.spoken))
    starts = [0]
    for piece in pieces:
        starts.append(starts[-1] + len(piece.spoken))
    out: list[_Piece] = []
    kept = 0  # pieces before this are in `out`
    for match in pattern.finditer(spoken):
        if match.start() == match.end():
            continue
        first, last = owner[match.start()], owner[match.end() - 1]
        if first < kept or any(pieces[i].expanded for i in range(first, last + 1)):
            continue
        out.extend(pieces[kept:first])
        head = spoken[starts[first] : match.start()]
        tail = spoken[match.end() : starts[last + 1]]
        written = "".join(piece.written for piece in pieces[first : last + 1])
        out.append(_Piece(written, f"{head}{spell(match)}{tail}", expanded=True))
        kept = last + 1
    out.extend(pieces[kept:])
    return out


def _title(m: re.Match[str]) -> str:
    before = m.string[: m.start()].split()
    if m.group(1) == "St" and before and before[-1][:1].isupper():  # "Baker St. London" is a street
        return m.group(0)
    return _TITLE_WORDS[m.group(1)]


def _cardinal(number: str) -> str:
    whole, _, fraction = number.replace(",", "").partition(".")
    if (len(whole) > 1 and whole.startswith("0")) or len(whole) > _MAX_NAMED_DIGITS:  # "007": digit by digit
        words = " ".join(_digits(whole))
    else:
        words = num2words(int(whole)).replace(",", "")
    return f"{words} point {' '.join(_digits(fraction))}" if fraction else words


def _digits(digits: str) -> list[str]:
    return [num2words(int(d)) for d in digits]


def _money(m: re.Match[str]) -> str:
    one, many, one_cent, many_cents = _MONEY_UNITS[m.group(1)]
    amount, scale = m.group(2), m.group(3)
    whole, _, fraction = amount.replace(",", "").partition(".")
    if scale or len(fraction) > 2 or len(whole) > _MAX_NAMED_DIGITS:
        return f"{_cardinal(amount)}{f' {scale}' if scale else ''} {many}"
    units, cents = int(whole), int(fraction.ljust(2, "0")) if fraction else 0
    parts = []
    if units or not cents:
        parts.append(f"{_cardinal(whole)} {one if units == 1 else many}")
    if cents:
        parts.append(f"{_cardinal(str(cents))} {one_cent if cents == 1 else many_cents}")
    return " and ".join(parts)


def _temperature(m: re.Match[str]) -> str:
    low, high, unit = m.group(1), m.group(2), _TEMPERATURE_UNITS[m.group(3).upper()]
    degrees = "degree" if not high and low == "1" else "degrees"
    span = f"{_cardinal(low)} to {_cardinal(high)}" if high else _cardinal(low)
    return f"{span} {degrees} {unit}"


def _time(m: re.Match[str]) -> str:
    hour, minute, am_pm = int(m.group(1)), int(m.group(2)), m.group(3)
    if minute == 0:
        spoken = "" if am_pm else " o'clock" if 1 <= hour <= 12 else " hundred"
    else:
        spoken = f" oh {num2words(minute)}" if minute < 10 else f" {num2words(minute)}"
    return f"{num2words(hour)}{spoken}{_am_pm(am_pm)}"


def _ordinal_words(number: str) -> str:
    if len(number) > _MAX_NAMED_DIGITS:
        return " ".join([*_digits(number[:-1]), num2words(int(number[-1]), to="ordinal")])
    return num2words(int(number), to="ordinal")


def _am_pm(letter: str | None) -> str:
    return f" {letter.upper()}M" if letter else ""


def _decade(m: re.Match[str]) -> str:
    words = num2words(int(m.group(1)), to="year")
    return f"{words[:-1]}ies" if words.endswith("y") else f"{words}s"


_NUMBER_FORMS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(rf"([$€£])\s?({_NUMBER})(?:\s+({_SCALES})\b)?"), _money),
    (re.compile(rf"\b({_NUMBER})\s?%"), lambda m: f"{_cardinal(m.group(1))} percent"),
    (re.compile(rf"\b({_NUMBER})(?:\s?-\s?({_NUMBER}))?\s?°\s?([CcFf])\b"), _temperature),
    (re.compile(rf"\b([01]?[0-9]|2[0-3]):([0-5][0-9])(?![0-9])(?:{_AM_PM})?"), _time),
    (
        re.compile(rf"\b(1[0-2]|0?[1-9]){_AM_PM}"),
        lambda m: f"{num2words(int(m.group(1)))}{_am_pm(m.group(2))}",
    ),
    (re.compile(r"\b([0-9]+)(?:st|nd|rd|th)\b", re.IGNORECASE), lambda m: _ordinal_words(m.group(1))),
    (re.compile(r"\b(1[1-9][0-9]0|20[0-9]0)s\b"), _decade),
    (
        re.compile(r"(?<![0-9.,])\b(1[1-9][0-9][0-9]|20[0-9][0-9])\b(?![.,][0-9])"),
        lambda m: num2words(int(m.group(1)), to="year"),
    ),
    (re.compile(rf"\b({_NUMBER})\b"), lambda m: _cardinal(m.group(1))),
)
