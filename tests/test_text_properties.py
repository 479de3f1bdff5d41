"""Property tests (hypothesis) for the pure text functions: any Unicode in, no unexpected exception
out, and no word lost on the way.

Covered: `engines.text` (speakable, split_sentences, detect_language, canonical_language,
base_language, foreign_script, is_cjk), `engines.mandarin` (normalize_mandarin, the Latin words
MandarinG2P hands to English), `studio.services.script` (parse_script, normalize_text) and
`studio.batch.request_for`. Every test is derandomized: CI runs the same examples each time, and
the `@example`s pin the cases that once failed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engines.mandarin import MandarinG2P, normalize_mandarin
from engines.text import (
    CJK_WIDTH,
    LANGUAGE_NAMES,
    base_language,
    canonical_language,
    detect_language,
    foreign_script,
    is_cjk,
    speakable,
    split_sentences,
)
from studio.batch import request_for
from studio.errors import BadInput
from studio.services.dialogue import DialogueConfig
from studio.services.script import Script, normalize_text, parse_script

FEW = settings(max_examples=60, deadline=None, derandomize=True)
SOME = settings(max_examples=150, deadline=None, derandomize=True)
MANY = settings(max_examples=200, deadline=None, derandomize=True)

UNSPEAKABLE_CATEGORIES = {"Cc", "Cf", "Co", "Cs", "Cn", "So"}
KANA = "あいうえおかきくけこんアイウエオカキクケコンー"
HAN = "我们你好今天中国人说话的是了在有个这天气很学生"
LATIN_MARKS = [". ", "! ", "? ", "… ", '." ', '?" ', ".) ", "”. ", ".” ", ", ", "; ", ": "]
CJK_MARKS = ["。", "！", "？", "；", "，", "、", "：", "」", "』", "）", "》", "“", "”", "……"]
ABBREVIATIONS = ["Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "St.", "vs.", "e.g.", "i.e.", "etc.", "No."]
ODDITIES = [
    "\n",
    "\r\n",
    "\t",
    "  ",
    "\x00",
    "\u200b",
    "\ufeff",
    "\ufe0f",
    "\u20e3",
    "😀",
    "👍🏽",
    "\ue000",
    "→",
]

# Any Unicode a Python str can hold (hypothesis leaves out lone surrogates), mixed with the pieces
# the functions look for, so that marks, abbreviations and scripts meet each other often.
any_text = st.text(max_size=120)
fragments = st.sampled_from(
    [
        *LATIN_MARKS,
        *CJK_MARKS,
        *ABBREVIATIONS,
        *ODDITIES,
        "word",
        "Hello",
        "0",
        "7",
        "٣",
        "𝟗",
        "日本語",
        "かな",
        "中文",
    ]
)
mixed_text = st.lists(st.one_of(fragments, st.text(max_size=6)), max_size=30).map("".join)
texts = st.one_of(any_text, mixed_text)


def letters_and_digits(text: str) -> list[str]:
    return [ch for ch in text if ch.isalnum()]


def without_whitespace(text: str) -> str:
    return "".join(text.split())


def width(text: str) -> int:
    return sum(CJK_WIDTH if is_cjk(ch) else 1 for ch in text)


def is_subsequence(needle: str, haystack: str) -> bool:
    rest = iter(haystack)
    return all(ch in rest for ch in needle)


# ---- engines.text: speakable and split_sentences ----------------------------------------------


@MANY
@given(texts)
@example("a\x00b\u200bc😀d\ufe0fe\U000f0000f")
def test_speakable_drops_only_unspeakable_characters(text: str) -> None:
    spoken = speakable(text)
    assert letters_and_digits(spoken) == letters_and_digits(text)
    assert all(ch in "\n\t°" or unicodedata.category(ch) not in UNSPEAKABLE_CATEGORIES for ch in spoken)
    assert "  " not in spoken
    assert speakable(spoken) == spoken


@MANY
@given(texts, st.integers(min_value=CJK_WIDTH, max_value=80))
@example("Mrs.0Mr. hello", 300)  # abbreviation markers once ran into each other and ate "Mrs."
@example("aaaa bbbbbbbbbbbbbb", 5)  # a long word among others was not cut
@example("我们在公园里散步 abc我们在公园里散步", 12)  # nor a CJK run among Latin words
def test_split_sentences_loses_no_word_and_keeps_the_limit(text: str, max_chars: int) -> None:
    sentences = split_sentences(text, max_chars)
    said = speakable(text)
    assert letters_and_digits("".join(sentences)) == letters_and_digits(said)
    assert is_subsequence(without_whitespace("".join(sentences)), without_whitespace(said))
    for sentence in sentences:
        assert sentence == sentence.strip() and any(ch.isalnum() for ch in sentence)
        assert width(sentence) <= max_chars, (sentence, max_chars)


latin_word = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZéß"), min_size=1, max_size=10)
cjk_word = st.text(st.sampled_from(HAN + KANA), min_size=1, max_size=6)
opener = st.sampled_from(["", "", "", '"', "(", "“", "「"])
closer = st.sampled_from(["", "", "", "", *LATIN_MARKS, *CJK_MARKS])
prose_token = st.tuples(opener, st.one_of(latin_word, cjk_word), closer).map("".join)
prose = st.lists(
    st.tuples(prose_token, st.sampled_from([" ", " ", "  ", "\n", ""])).map("".join), min_size=1, max_size=40
).map("".join)


@SOME
@given(prose)
@example('He said "Hi." She left.')  # the closing quote went with the space after it
def test_split_sentences_keeps_the_marks_and_quotes_of_words(text: str) -> None:
    # Every piece of this text has a letter, so nothing may go but whitespace.
    assert without_whitespace("".join(split_sentences(text))) == without_whitespace(text)


@SOME
@given(st.lists(st.sampled_from([*ABBREVIATIONS, "Smith", "arrived", "it", "and"]), min_size=1, max_size=12))
def test_abbreviations_do_not_end_sentences(words: list[str]) -> None:
    text = " ".join(words) + "."
    assert split_sentences(text) == [text]


# ---- engines.text: languages -------------------------------------------------------------------


@MANY
@given(texts, texts)
def test_detect_language_always_names_a_studio_language(text: str, context: str) -> None:
    language = detect_language(text, context)
    assert language in LANGUAGE_NAMES
    assert (language != "en-us") == is_cjk(text)
    assert base_language(language) in {"zh", "ja", "en"}


@SOME
@given(texts, st.text(st.sampled_from(KANA), min_size=1, max_size=5), texts)
def test_kana_anywhere_is_japanese(before: str, kana: str, after: str) -> None:
    assert detect_language(before + kana + after) == "ja"


@SOME
@given(
    st.text(st.sampled_from(HAN + " ，。！“”《》·・—"), min_size=1).filter(lambda t: any(c in HAN for c in t))
)
@example("列奥纳多・达・芬奇")  # the katakana middle dot, common in Chinese names, made it Japanese
def test_han_without_kana_is_mandarin_unless_the_text_around_has_kana(text: str) -> None:
    assert detect_language(text) == "zh"
    assert detect_language(text, context=f"{text}です") == "ja"


@SOME
@given(st.text(st.characters(codec="ascii"), max_size=60))
def test_ascii_is_english_and_never_a_foreign_script(text: str) -> None:
    assert detect_language(text) == "en-us"
    assert not is_cjk(text)
    assert foreign_script(text) is None


@MANY
@given(texts)
def test_foreign_script_names_a_script_only_when_no_spoken_one_is_there(text: str) -> None:
    if foreign_script(text) is not None:
        assert any(ch.isalpha() for ch in text)
        assert not any(ch.isalpha() and (ch.isascii() or is_cjk(ch)) for ch in text)
    assert foreign_script(f"{text} a") is None and foreign_script(f"中{text}") is None


@MANY
@given(
    st.one_of(texts, st.sampled_from(["auto", " AUTO ", "", "  ", "EN", "zh-CN", "日本語", "b", "klingon"]))
)
def test_canonical_language_is_a_studio_code_none_or_a_value_error(value: str) -> None:
    try:
        code = canonical_language(value)
    except ValueError as error:
        assert value in str(error) and "use auto" in str(error)
    else:
        assert code is None or code in LANGUAGE_NAMES
        assert code is not None or not value.strip() or value.strip().lower() == "auto"


@SOME
@given(
    st.sampled_from(
        [*LANGUAGE_NAMES, "en", "cmn", "Chinese", "中文", "日文", "英文", "a", "B", "JPN", "en_GB"]
    ),
    st.sampled_from(["", " ", "\t", "\n "]),
    st.booleans(),
)
def test_every_spelling_of_a_language_gives_its_code(spelling: str, padding: str, upper: bool) -> None:
    code = canonical_language(padding + (spelling.upper() if upper else spelling) + padding)
    assert code in LANGUAGE_NAMES
    assert canonical_language(code) == code
    assert base_language(code) == code.split("-")[0]


# ---- engines.mandarin ---------------------------------------------------------------------------


@SOME
@given(texts)
@example("٣个苹果")  # a digit other than 0-9 was a KeyError inside misaki
def test_normalize_mandarin_takes_any_text_and_leaves_no_digit(text: str) -> None:
    assert not any(ch.isdecimal() for ch in normalize_mandarin(text))


ascii_word = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyz'ABCDEFGHMSTXYZ"), min_size=1, max_size=9
).filter(lambda w: w[0] != "'")
han_run = st.text(st.sampled_from(HAN + "，。！？"), min_size=1, max_size=6)
chinese_with_latin = st.lists(
    st.tuples(st.one_of(han_run, ascii_word), st.sampled_from(["", " ", "  "])).map("".join),
    min_size=1,
    max_size=12,
).map("".join)


def latin_words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z][A-Za-z']*", text)


@SOME
@given(chinese_with_latin)
@example("我喜欢 machine learning 和 AI。")  # misaki read "m" and "h" as units and glued the words
def test_normalize_mandarin_keeps_latin_words(text: str) -> None:
    assert latin_words(normalize_mandarin(text)) == latin_words(text)


number = st.one_of(
    st.integers(min_value=0, max_value=10**12).map(str),
    st.tuples(st.integers(0, 9999), st.integers(0, 999)).map(lambda p: f"{p[0]}.{p[1]}"),
    st.integers(min_value=1000, max_value=10**9).map(lambda n: f"{n:,}"),
    st.integers(0, 100).map(lambda n: f"{n}%"),
    st.tuples(st.sampled_from("¥$€£"), st.integers(0, 10**6)).map(lambda p: f"{p[0]}{p[1]}"),
    st.tuples(st.integers(0, 23), st.integers(0, 59)).map(lambda p: f"{p[0]}:{p[1]:02d}"),
    st.tuples(st.integers(1000, 2099), st.integers(1, 12), st.integers(1, 28)).map(
        lambda p: f"{p[0]}年{p[1]}月{p[2]}日"
    ),
)


@SOME
@given(st.lists(st.one_of(han_run, number), min_size=1, max_size=8).map("".join))
@example("价格是¥1,000。增长了50%")
def test_normalize_mandarin_reads_every_number_in_chinese(text: str) -> None:
    assert not re.search("[0-9]", normalize_mandarin(text))


class EnglishRecorder:
    """The `english` phonemizer MandarinG2P calls: records what it is asked to say."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, words: str) -> str:
        self.asked.append(words)
        return "ˈɪŋɡlɪʃ"


@pytest.fixture(scope="module")
def g2p_and_english() -> Iterator[tuple[MandarinG2P, EnglishRecorder]]:
    english = EnglishRecorder()
    yield MandarinG2P(english=english), english


@FEW
@given(chinese_with_latin)
@example("我喜欢 machine learning 和 AI。")
def test_mandarin_g2p_hands_every_latin_word_to_english(
    g2p_and_english: tuple[MandarinG2P, EnglishRecorder], text: str
) -> None:
    g2p, english = g2p_and_english
    english.asked.clear()
    phonemes = g2p(text)
    latin_runs = re.findall(r"[A-Za-z][A-Za-z']*(?:\s+[A-Za-z][A-Za-z']*)*", text)  # said in one go
    assert [words.replace(" ", "") for words in english.asked] == [run.replace(" ", "") for run in latin_runs]
    assert not re.search("[A-Z]", phonemes)  # capitals went to English, not into the phonemes


# ---- studio.services.script: normalize_text ------------------------------------------------------

languages = st.one_of(
    st.sampled_from(["en", "en-us", "en-gb", "EN", "zh", "ja", "fr", "de", ""]), st.text(max_size=5)
)


@MANY
@given(texts, languages)
@example("1" * 400, "en")  # past num2words' largest number: OverflowError
@example("$" + "9" * 5000 + " and the " + "1" * 5000 + "th", "en")  # past int()'s 4300 digits: ValueError
def test_normalize_text_takes_any_text_and_collapses_whitespace(text: str, language: str) -> None:
    normalized = normalize_text(text, language)
    assert normalized == normalized.strip() and not re.search(r"\s\s", normalized)


@MANY
@given(texts, st.sampled_from(["fr", "de", "zh", "ja", "es"]))
def test_normalize_text_outside_english_keeps_every_letter_and_digit(text: str, language: str) -> None:
    def kept(value: str) -> list[str]:  # full-width letters become ASCII ones: compare as NFKC
        return letters_and_digits(unicodedata.normalize("NFKC", value))

    assert kept(normalize_text(text, language)) == kept(text)


english_number = st.one_of(
    number.filter(lambda n: "年" not in n),
    st.integers(min_value=0, max_value=10**400).map(str),
    st.tuples(st.integers(0, 10**6), st.sampled_from(["st", "nd", "rd", "th", "TH"])).map(
        lambda p: f"{p[0]}{p[1]}"
    ),
    st.tuples(st.integers(1, 12), st.sampled_from([" pm", "am", " a.m.", " P.M."])).map(
        lambda p: f"{p[0]}{p[1]}"
    ),
    st.tuples(st.sampled_from("$€£"), st.integers(0, 999), st.sampled_from(["", ".5", ".05", ".999"])).map(
        lambda p: f"{p[0]}{p[1]}{p[2]} million"
    ),
    st.integers(1100, 2090).map(lambda year: f"{year - year % 10}s"),
)
english_word = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz"), min_size=1, max_size=8)


@SOME
@given(
    st.lists(
        st.tuples(st.one_of(english_word, english_number), st.sampled_from(["", "", ",", ".", "!", "?"])).map(
            "".join
        ),
        min_size=1,
        max_size=10,
    ).map(" ".join)
)
@example("I have " + "9" * 350 + " apples and the " + "1" * 320 + "th")
def test_normalize_english_spells_out_every_number(text: str) -> None:
    assert not re.search(r"\d", normalize_text(text, "en"))


@SOME
@given(
    st.lists(st.tuples(english_word, st.sampled_from(["", ",", ".", "!", "?", ";", "…", "—"])), max_size=12)
)
def test_normalize_english_says_the_same_words_when_there_is_nothing_to_spell(
    words: list[tuple[str, str]],
) -> None:
    text = " ".join(word + mark for word, mark in words)
    assert re.findall("[a-z]+", normalize_text(text, "en")) == [word for word, _ in words]


# ---- studio.services.script: parse_script ------------------------------------------------------

script_fragments = st.sampled_from(
    [
        "[S1]",
        "(s2)",
        "[ S3 ]",
        "(S4)：",
        "[S0]",
        "[S6]",
        "[S" + "9" * 40 + "]",
        "Speaker 1:",
        "speaker5：",
        "S2:",
        "S9:",
        "Alice:",
        "Bob：",
        "Dr. Who:",
        "角色1：",
        "At 9:30",
        ":",
        "：",
        "\n",
        "\r\n",
        "\u2028",
        " ",
        "...",
        "hello",
        "你好",
    ]
)
script_texts = st.one_of(
    any_text, st.lists(st.one_of(script_fragments, st.text(max_size=5)), max_size=25).map("".join)
)


def check_script(script: Script, text: str, max_speakers: int) -> None:
    lines = text.splitlines()
    for turn in script.turns:
        assert turn.text in lines[turn.line - 1] and turn.text == turn.text.strip()
        assert any(ch.isalnum() for ch in turn.text)
        assert turn.speaker in {f"S{n}" for n in range(1, max_speakers + 1)}
    assert [t.line for t in script.turns] == sorted(t.line for t in script.turns)
    in_order = list(dict.fromkeys(t.speaker for t in script.turns))
    assert [s.id for s in script.speakers] == in_order


@MANY
@given(script_texts, st.integers(min_value=1, max_value=5))
@example("[S" + "1" * 5000 + "] hi", 5)  # int() refuses 4300+ digits: a ValueError, not BadInput
@example("Speaker " + "2" * 5000 + ": hi", 5)
def test_parse_script_gives_turns_or_a_bad_input_with_a_message(text: str, max_speakers: int) -> None:
    try:
        script = parse_script(text, max_speakers)
    except BadInput as error:
        assert error.message and error.code in {
            "empty_script",
            "empty_turn",
            "bad_speaker_tag",
            "too_many_speakers",
        }
    else:
        check_script(script, text, max_speakers)


# Well-formed scripts: a line is an optional lead (a numbered speaker, a name, or plain text) and
# inline tagged turns; each turn is (kind, who, text) with kind "number", "name" or "plain".
letter = st.sampled_from("abcxyzABCXYZéßøÆЖжΩλ我你中かナبאकก한")  # Latin, Cyrillic, Greek, CJK, RTL, ...
turn_text = st.lists(st.text(letter, min_size=1, max_size=8), min_size=1, max_size=5).map(" ".join)
# At most five speakers: S1, S2 (numbered or plain) and three names.
numbers = st.integers(min_value=1, max_value=2)
names = st.sampled_from(["Alice", "ALICE", "Dr. Who", "小明"])
LEAD_NUMBER_STYLES = ["Speaker {n}: ", "speaker{n}：", "S{n}: ", "s{n} :"]
INLINE_STYLES = ["[S{n}] ", "(s{n}) ", "[ s{n} ]", "( S{n} )", "[S{n}]: ", "(s{n})："]
TurnSpec = tuple[str, int | str | None, str]  # (kind, number or name, text)


@st.composite
def script_lines(draw: st.DrawFn) -> list[TurnSpec]:
    lead_kind = draw(st.sampled_from(["number", "name", "plain", None]))
    line: list[TurnSpec] = []
    if lead_kind == "number":
        line.append(("number", draw(numbers), draw(turn_text)))
    elif lead_kind == "name":
        line.append(("name", draw(names), draw(turn_text)))
    elif lead_kind == "plain":
        line.append(("plain", None, draw(turn_text)))
    inline = draw(
        st.lists(st.tuples(st.just("number"), numbers, turn_text), min_size=0 if line else 1, max_size=3)
    )
    return line + inline


@st.composite
def rendered_lines(draw: st.DrawFn, line: list[TurnSpec]) -> str:
    parts = []
    for index, (kind, who, text) in enumerate(line):
        if kind == "plain":
            parts.append(text)
        elif kind == "name":
            parts.append(f"{who}{draw(st.sampled_from([': ', '：', ' : ']))}{text}")
        elif index == 0 and draw(st.booleans()):
            parts.append(draw(st.sampled_from(LEAD_NUMBER_STYLES)).format(n=who) + text)
        else:
            parts.append(draw(st.sampled_from(INLINE_STYLES)).format(n=who) + text)
    return draw(st.sampled_from([" ", ""])).join(parts)


def expected_turns(
    lines: list[list[TurnSpec]], line_numbers: list[int]
) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, str]]]:
    """What the script module's docstring promises: the turns (speaker, label, text, line) and the
    speakers (id, label) in order of first appearance."""
    reserved = {who for line in lines for kind, who, _ in line if kind == "number"}
    held: dict[int, str] = {}
    named: dict[str, int] = {}
    previous = None
    turns = []
    for line, line_number in zip(lines, line_numbers, strict=True):
        for kind, who, text in line:
            if kind == "number":
                number, label = int(who or 0), f"S{who}"
            elif kind == "name":
                key = str(who).casefold()
                if key not in named:
                    named[key] = min(n for n in range(1, 6) if n not in held and n not in reserved)
                number, label = named[key], str(who)
            else:
                number = 2 if previous == 1 else 1
                label = held.get(number, f"S{number}")
            held.setdefault(number, label)
            turns.append((f"S{number}", label, text, line_number))
            previous = number
    return turns, [(f"S{number}", label) for number, label in held.items()]


@SOME
@given(st.data())
def test_well_formed_scripts_give_back_every_line_in_order(data: st.DataObject) -> None:
    lines = data.draw(st.lists(script_lines(), min_size=1, max_size=8))
    blank_before = data.draw(
        st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=len(lines), max_size=len(lines))
    )
    newline = data.draw(st.sampled_from(["\n", "\r\n"]))
    rows: list[str] = []
    line_numbers = []
    for line, blanks in zip(lines, blank_before, strict=True):
        rows += [data.draw(st.sampled_from(["", "  ", "\t"])) for _ in range(blanks)]
        rows.append(data.draw(rendered_lines(line)))
        line_numbers.append(len(rows))
    text = newline.join(rows)
    script = parse_script(text)
    turns, speakers = expected_turns(lines, line_numbers)
    assert [(t.speaker, t.label, t.text, t.line) for t in script.turns] == turns, text
    assert [(s.id, s.label) for s in script.speakers] == speakers
    check_script(script, text, 5)


# ---- studio.batch: one JSONL line -------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
batch_keys = st.sampled_from(
    [
        "text",
        "language",
        "voices",
        "voice_speaker1",
        "voice_speaker2",
        "prompt_audio_speaker1",
        "prompt_text_speaker1",
    ]
)
batch_items = st.one_of(
    json_values,
    st.dictionaries(
        batch_keys,
        st.one_of(json_values, st.sampled_from(["[S1] Hi", "conftest.py", "x" * 300, "a\x00b", "af_heart"])),
        max_size=6,
    ),
)
TESTS = Path(__file__).resolve().parent


@MANY
@given(batch_items)
@example({"text": "[S1] Hi", "voices": ["af_heart"]})  # .items() on a list: AttributeError
@example({"text": "[S1] Hi", "prompt_audio_speaker1": "x" * 300})  # stat(): OSError, name too long
@example({"text": "[S1] Hi", "prompt_audio_speaker1": "a\x00b"})
def test_a_batch_line_is_a_request_or_a_value_error_naming_the_problem(item: object) -> None:
    try:
        request = request_for(item, TESTS, normalize=False, fmt="wav")  # type: ignore[arg-type]
    except ValueError as error:
        assert re.search(r"JSON object|'text'|'voices'|'language'|prompt_audio_speaker\d", str(error)), error
    else:
        assert isinstance(request, DialogueConfig) and isinstance(item, dict)
        assert request.script == item["text"] and request.script.strip()
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in request.voices.items())
