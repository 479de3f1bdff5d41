"""Sentence splitting shared by every engine (Latin and CJK punctuation)."""

from __future__ import annotations

import re
import unicodedata

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
    unassigned code points, and pictographs (emoji, dingbats); line breaks and tabs stay."""
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in "\n\t":
            kept.append(ch)
        elif category in _UNSPEAKABLE or ch in _EMOJI_JOINERS:
            kept.append(" " if category == "Cc" else "")
        else:
            kept.append(ch)
    return re.sub(r" {2,}", " ", "".join(kept))


_UNSPEAKABLE = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "So"})  # So: emoji, arrows, dingbats, ...
_EMOJI_JOINERS = "\ufe0e\ufe0f\u20e3"  # variation selectors and the keycap mark (category Mn)


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
# The studio's language codes: "zh" (Mandarin), "ja", "en-us", "en-gb". `None` everywhere means
# "auto": each sentence is detected by its script.
LANGUAGE_NAMES = {"zh": "Mandarin Chinese", "ja": "Japanese", "en-us": "English", "en-gb": "British English"}
_ALIASES = {
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
    ),
    "ja": ("ja", "ja-jp", "ja_jp", "jp", "jpn", "japanese", "日文", "日语", "日本語"),
    "en-us": ("en", "en-us", "en_us", "eng", "english", "英文", "英语", "a"),
    "en-gb": ("en-gb", "en_gb", "b"),
}
_CANONICAL = {alias: code for code, aliases in _ALIASES.items() for alias in aliases}
LANGUAGE_SPELLINGS = ("auto", *_CANONICAL)  # every spelling `canonical_language` takes (any case)
# Kana, without the katakana middle dot U+30FB: Chinese text writes names with it too ("达・芬奇").
_KANA = re.compile(r"[\u3040-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def canonical_language(value: str | None) -> str | None:
    """A language as the studio names it ("zh", "ja", "en-us", "en-gb"), or None for auto/empty.

    Accepts the common spellings clients send: ISO codes, "cmn", "Chinese", GPT-SoVITS's "中文" /
    "日文" / "英文", Kokoro's "a"/"b". Raises ValueError naming the choices for anything else.
    """
    if value is None or not str(value).strip() or str(value).strip().lower() == "auto":
        return None
    code = _CANONICAL.get(str(value).strip().lower())
    if code is None:
        raise ValueError(
            f"language '{value}' is not one the studio speaks: use auto, zh (Mandarin), ja or en (en-us, en-gb)"
        )
    return code


def detect_language(text: str, context: str = "") -> str:
    """The language of one sentence by its script: kana -> "ja", Han without kana -> "zh", else
    "en-us". A Han-only sentence in a text (`context`) that has kana elsewhere is Japanese."""
    if _KANA.search(text):
        return "ja"
    if _HAN.search(text):
        return "ja" if context and _KANA.search(context) else "zh"
    return "en-us"


def foreign_script(text: str) -> str | None:
    """The script `text` is written in (e.g. "Thai", "Hangul", "Cyrillic") when it has letters but
    none in a script the studio speaks (Latin, Han, kana); None otherwise."""
    foreign = None
    for ch in text:
        if not ch.isalpha():
            continue
        if ch.isascii() or _HAN.match(ch) or _KANA.match(ch) or "LATIN" in unicodedata.name(ch, ""):
            return None
        foreign = foreign or unicodedata.name(ch, "UNKNOWN").split()[0].title()
    return foreign


def base_language(code: str) -> str:
    """ "zh", "ja" or "en" for a studio language code (the family engines and ASR care about)."""
    return code.split("-")[0]


def is_cjk(text: str) -> bool:
    """Whether `text` is written in Chinese or Japanese characters (no spaces between words)."""
    return bool(_HAN.search(text) or _KANA.search(text))
