"""Dialogue scripts: the one parser (UI, API, batch) from script text to speaker turns, and the
text normalisation engines need before speaking a turn.

Formats, mixed freely in one script:
- inline tags `[S1] text [S2] text` or `(s1) text (s2) text`: case-insensitive, spaces optional,
  glued to the text (`[S1]Hey`) and many turns on one line, as in MOSS-TTSD's data;
- `Speaker 1: text` and `S1: text`;
- `Name: text`, `角色1：text`, `A: text` with an ASCII or full-width colon;
- plain lines with no tag.

Each non-blank line is its own turn (or turns, when it holds inline tags); blank lines are ignored.

Numbering: explicit numbered tags (`[Sn]`, `(sn)`, `Speaker n:`, `Sn:`) keep their number n, so
MOSS-TTSD scripts mean what they say. Named speakers take, in order of first appearance, the lowest
number that no explicit tag anywhere in the script claims and no earlier speaker holds. Names match
case-insensitively; a turn's label is the tag as written ("S1" for numbered tags).

Plain lines alternate between S1 and S2: a plain line goes to S2 when the turn before it is S1's,
and to S1 otherwise (first line, after S2, after S3..S5), so an untagged reply to a tagged line
goes to the other of the first two speakers.

A name must start the line and look like a name, so that "Note the time: 5 pm" stays text: at most
24 characters (CJK characters count double), at most 3 words, each starting with a capital letter,
a digit or a caseless letter (CJK), letters/digits/`-'_·` only (titles like "Dr." allowed), at
least one letter, and not a time ("At 9:30"). "Note: ..." still reads as a speaker named Note; tag
such a line (`[S1] Note: ...`) to keep it as text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace

from engines.text import normalize_text  # noqa: F401 (re-exported: the dialogue normalises turns with it)
from studio.errors import BadInput


@dataclass(frozen=True)
class Speaker:
    id: str  # "S1".."S5"
    label: str  # as first written: "S1", "Alice", "角色1"


@dataclass(frozen=True)
class Turn:
    speaker: str  # "S1".."S5"
    label: str  # the tag as written: "S1" for [S1]/(s1)/Speaker 1, else the name ("Alice", "角色1", "A")
    text: str
    line: int  # 1-based line of the script where the turn starts


@dataclass(frozen=True)
class Script:
    turns: list[Turn]
    speakers: list[Speaker]  # in order of first appearance


# ---- parsing --------------------------------------------------------------------------------

_INLINE_TAG = re.compile(r"(\[\s*[Ss]\s*(\d+)\s*\]|\(\s*[Ss]\s*(\d+)\s*\))\s*[:：]?")
_LEADING_NUMBER = re.compile(r"((?:speaker|s)\s*(\d+))\s*[:：]", re.IGNORECASE)
_LEADING_NAME = re.compile(r"([^:：]+?)\s*[:：]")
_TITLES = frozenset({"Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "St."})
_NAME_EXTRA_CHARS = "-'’_·・"
_MAX_NAME_WIDTH = 24
_MAX_NAME_WORDS = 3
_MAX_TAG_DIGITS = 18  # past this a tag number is out of range anyway (and int() refuses 4300+ digits)


@dataclass(frozen=True)
class _Segment:
    """One turn as found on a line, before speakers get numbers."""

    line: int
    text: str
    number: int | None = None  # explicit tag
    tag: str = ""  # the explicit tag as written, for error messages
    name: str | None = None  # named speaker; neither number nor name: a plain line


def parse_script(text: str, max_speakers: int = 5) -> Script:
    """Turns and speakers of a dialogue script; raises BadInput naming the line on any mistake."""
    segments = [
        seg for number, line in enumerate(text.splitlines(), 1) for seg in _line_segments(number, line)
    ]
    if not segments:
        raise BadInput("script is empty: write one turn per line, e.g. [S1] Hello", "empty_script")
    # Names must not take a number an explicit tag uses later in the script.
    reserved = {s.number for s in segments if s.number is not None and 1 <= s.number <= max_speakers}
    speakers: dict[int, Speaker] = {}
    named: dict[str, int] = {}
    turns: list[Turn] = []
    previous: int | None = None
    for seg in segments:
        if seg.number is not None and not 1 <= seg.number <= max_speakers:
            raise BadInput(
                f"line {seg.line}: {seg.tag} — speaker tags go from S1 to S{max_speakers}", "bad_speaker_tag"
            )
        if not _has_words(seg.text):  # only a tagged turn can be empty: plain ones need words to exist
            raise BadInput(
                f"line {seg.line}: speaker {seg.name or f'S{seg.number}'} has no text", "empty_turn"
            )
        if seg.number is not None:
            number, label = seg.number, f"S{seg.number}"
        elif seg.name is not None:
            number = named.get(seg.name.casefold()) or _free_number(seg, speakers, reserved, max_speakers)
            named[seg.name.casefold()] = number
            label = seg.name
        else:
            number = 2 if previous == 1 and max_speakers >= 2 else 1
            label = speakers[number].label if number in speakers else f"S{number}"
        speakers.setdefault(number, Speaker(f"S{number}", label))
        turns.append(Turn(f"S{number}", label, seg.text, seg.line))
        previous = number
    return Script(turns=turns, speakers=list(speakers.values()))


def _line_segments(number: int, line: str) -> list[_Segment]:
    line = line.strip()
    lead: _Segment | None = None
    rest = line
    if m := _LEADING_NUMBER.match(line):
        lead, rest = _Segment(number, "", _tag_number(m.group(2)), m.group(1)), line[m.end() :]
    elif (m := _LEADING_NAME.match(line)) and _is_name(m.group(1), line[m.end() :]):
        lead, rest = _Segment(number, "", name=" ".join(m.group(1).split())), line[m.end() :]
    tags = list(_INLINE_TAG.finditer(rest))
    head = rest[: tags[0].start() if tags else len(rest)].strip()
    segments = []
    if lead:
        segments.append(replace(lead, text=head))
    elif _has_words(head):  # stray punctuation before a first tag is not a turn
        segments.append(_Segment(number, head))
    for i, tag in enumerate(tags):
        body = rest[tag.end() : tags[i + 1].start() if i + 1 < len(tags) else len(rest)].strip()
        segments.append(_Segment(number, body, _tag_number(tag.group(2) or tag.group(3)), tag.group(1)))
    return segments


def _tag_number(digits: str) -> int:
    """The number of a speaker tag, or 0 (out of range too) for an absurdly long one ("[S999...9]")."""
    return int(digits) if len(digits.lstrip("0")) <= _MAX_TAG_DIGITS else 0


def _is_name(candidate: str, after: str) -> bool:
    words = candidate.split()
    width = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in " ".join(words))
    if not words or len(words) > _MAX_NAME_WORDS or width > _MAX_NAME_WIDTH:
        return False
    if candidate[-1].isdigit() and after[:1].isdigit():  # a time or ratio, "At 9:30"
        return False
    for word in words:
        if word not in _TITLES and not all(
            ch.isalnum() or ch in _NAME_EXTRA_CHARS or unicodedata.category(ch).startswith("M") for ch in word
        ):
            return False
        if word[0].islower() or not word[0].isalnum():
            return False
    return any(ch.isalpha() for ch in candidate)


def _free_number(seg: _Segment, speakers: dict[int, Speaker], reserved: set[int], max_speakers: int) -> int:
    for number in range(1, max_speakers + 1):
        if number not in speakers and number not in reserved:
            return number
    count = len(speakers.keys() | reserved) + 1
    raise BadInput(
        f"line {seg.line}: a {_ordinal(count)} speaker '{seg.name}' — at most {max_speakers} speakers",
        "too_many_speakers",
    )


def _has_words(text: str) -> bool:
    # Punctuation alone is not speakable: engines would make nothing of "..." either.
    return any(ch.isalnum() for ch in text)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
