"""Dialogue script parsing (every format, numbering, errors) and text normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.errors import BadInput
from studio.services.script import Speaker, Turn, normalize_text, parse_script

MOSS_EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "moss-ttsd-examples-only-text.jsonl"


def _turns(script: str) -> list[tuple[str, str, str, int]]:
    return [(t.speaker, t.label, t.text, t.line) for t in parse_script(script).turns]


def _error(script: str, **kwargs: int) -> BadInput:
    with pytest.raises(BadInput) as caught:
        parse_script(script, **kwargs)
    assert caught.value.status == 422
    return caught.value


# ---- formats ----------------------------------------------------------------------------------


def test_bracket_tags_one_per_line() -> None:
    assert _turns("[S1] Hello there.\n[S2] Hi!") == [("S1", "S1", "Hello there.", 1), ("S2", "S2", "Hi!", 2)]


def test_bracket_tags_inline_glued_case_insensitive_with_spaces() -> None:
    assert _turns("[S1]Hey. [s2] Yo. [ S1 ]Again.") == [
        ("S1", "S1", "Hey.", 1),
        ("S2", "S2", "Yo.", 1),
        ("S1", "S1", "Again.", 1),
    ]


def test_paren_tags_inline_and_per_line() -> None:
    assert _turns("(s1) one (s2) two\n(S2)three") == [
        ("S1", "S1", "one", 1),
        ("S2", "S2", "two", 1),
        ("S2", "S2", "three", 2),
    ]


def test_tag_followed_by_a_colon() -> None:
    assert _turns("[S1]: Hi\n(s2)：Hey") == [("S1", "S1", "Hi", 1), ("S2", "S2", "Hey", 2)]


def test_speaker_n_and_sn_colon() -> None:
    assert _turns("Speaker 1: Hi\nspeaker2：Hey\nS1: Bye") == [
        ("S1", "S1", "Hi", 1),
        ("S2", "S2", "Hey", 2),
        ("S1", "S1", "Bye", 3),
    ]


def test_names_with_ascii_and_full_width_colons() -> None:
    script = parse_script("Alice: Hi Bob.\nBob：Hi Alice.\nA: Short name.\nSpeaker A: A named speaker.")
    assert [(t.speaker, t.label, t.text) for t in script.turns] == [
        ("S1", "Alice", "Hi Bob."),
        ("S2", "Bob", "Hi Alice."),
        ("S3", "A", "Short name."),
        ("S4", "Speaker A", "A named speaker."),
    ]
    assert script.speakers == [
        Speaker("S1", "Alice"),
        Speaker("S2", "Bob"),
        Speaker("S3", "A"),
        Speaker("S4", "Speaker A"),
    ]


def test_chinese_and_japanese_names() -> None:
    assert _turns("角色1：你好！\n角色2: 你好，很高兴见到你。\n田中：こんにちは。\n角色1：再见。") == [
        ("S1", "角色1", "你好！", 1),
        ("S2", "角色2", "你好，很高兴见到你。", 2),
        ("S3", "田中", "こんにちは。", 3),
        ("S1", "角色1", "再见。", 4),
    ]


def test_names_match_case_insensitively_and_keep_their_spelling_per_turn() -> None:
    assert _turns("Alice: one\nALICE: two") == [("S1", "Alice", "one", 1), ("S1", "ALICE", "two", 2)]


def test_titles_and_multi_word_names() -> None:
    assert _turns("Dr. Smith: Hello.\nMary Jane Watson: Hi.") == [
        ("S1", "Dr. Smith", "Hello.", 1),
        ("S2", "Mary Jane Watson", "Hi.", 2),
    ]


def test_mixed_formats_in_one_script() -> None:
    script = (
        "[S1] Hi. [S2] Hello.\n\nSpeaker 1: How are you?\n(s2) Fine.\nAlice: I'm new.\nJust a plain line.\n"
    )
    assert _turns(script) == [
        ("S1", "S1", "Hi.", 1),
        ("S2", "S2", "Hello.", 1),
        ("S1", "S1", "How are you?", 3),
        ("S2", "S2", "Fine.", 4),
        ("S3", "Alice", "I'm new.", 5),
        ("S1", "S1", "Just a plain line.", 6),
    ]


def test_a_name_line_can_continue_with_inline_tags() -> None:
    assert _turns("Alice: Hi [S1] Hey") == [("S2", "Alice", "Hi", 1), ("S1", "S1", "Hey", 1)]


@pytest.mark.skipif(not MOSS_EXAMPLES.exists(), reason="shared MOSS-TTSD example data not present")
def test_moss_ttsd_example_line() -> None:
    text = json.loads(MOSS_EXAMPLES.read_text(encoding="utf-8").splitlines()[0])["text"]
    script = parse_script(text)
    assert [t.speaker for t in script.turns] == ["S1", "S2"] * 3 + ["S1"]
    assert {t.line for t in script.turns} == {1}
    assert [t.text for t in script.turns] == [
        "Hey, did you hear about that company called MoSi AI?",
        "MoSi AI? Yeah, I think I've heard of them. Aren't they the ones doing AI stuff? "
        "What new thing have they come up with now?",
        "Yeah, that's them! They recently launched this super hot new product called, um, Asteroid.",
        "Asteroid. That's a pretty cool name. Does it mean like the space rock?",
        "Yeah, I think that's what it means. Let me tell you, this thing is incredible. They say it's "
        "currently the most realistic, human-like conversational TTS model out there.",
        "Oh, TTS technology? You mean the text-to-speech thing? Aren't there already a lot of those on "
        "the market? What makes this one so special?",
        "Well, it's completely different. They say the voice produced by Asteroid sounds almost exactly "
        "like a real person talking. And it's super smooth and natural. Not at all like, you know, that "
        "stiff robotic tone.",
    ]
    assert script.speakers == [Speaker("S1", "S1"), Speaker("S2", "S2")]


# ---- numbering --------------------------------------------------------------------------------


def test_explicit_numbers_are_kept_and_speakers_listed_by_first_appearance() -> None:
    script = parse_script("[S2] I speak first.\n[S1] Then me.")
    assert [t.speaker for t in script.turns] == ["S2", "S1"]
    assert script.speakers == [Speaker("S2", "S2"), Speaker("S1", "S1")]


def test_names_skip_numbers_that_explicit_tags_use_later() -> None:
    script = parse_script("Alice: Hi.\nBob: Hey.\n[S1] Tagged one.\n[S2] Tagged two.")
    assert [(t.speaker, t.label) for t in script.turns] == [
        ("S3", "Alice"),
        ("S4", "Bob"),
        ("S1", "S1"),
        ("S2", "S2"),
    ]


def test_five_speakers_are_fine() -> None:
    script = parse_script("A: 1\nB: 2\n[S3] 3\nSpeaker 4: 4\nEve: 5")
    assert [s.id for s in script.speakers] == ["S1", "S2", "S3", "S4", "S5"]
    assert [s.label for s in script.speakers] == ["A", "B", "S3", "S4", "Eve"]


def test_a_sixth_speaker_fails_naming_its_line() -> None:
    error = _error("Al: 1\nBo: 2\nCy: 3\nDi: 4\nEd: 5\n\n\n\nEve: 6")
    assert error.code == "too_many_speakers"
    assert error.message == "line 9: a 6th speaker 'Eve' — at most 5 speakers"


def test_a_name_cannot_take_a_number_an_explicit_tag_claims() -> None:
    error = _error("Al: 1\nBo: 2\nCy: 3\nDi: 4\nEd: 5\n[S5] 6")
    assert error.message == "line 5: a 6th speaker 'Ed' — at most 5 speakers"


def test_max_speakers_bounds_tags_and_names() -> None:
    assert _error("[S3] hi", max_speakers=2).message == "line 1: [S3] — speaker tags go from S1 to S2"
    assert (
        _error("A: 1\nB: 2\nC: 3", max_speakers=2).message == "line 3: a 3rd speaker 'C' — at most 2 speakers"
    )


# ---- plain lines ------------------------------------------------------------------------------


def test_untagged_lines_alternate() -> None:
    assert [t.speaker for t in parse_script("one\ntwo\n\nthree\nfour").turns] == ["S1", "S2", "S1", "S2"]


def test_untagged_line_goes_to_the_other_of_s1_and_s2() -> None:
    script = "[S2] tagged\nplain a\nplain b\n[S1] tagged\nplain c\n[S3] tagged\nplain d"
    assert [t.speaker for t in parse_script(script).turns] == ["S2", "S1", "S2", "S1", "S2", "S3", "S1"]


def test_untagged_line_takes_the_label_of_its_speaker() -> None:
    assert _turns("Alice: Hi.\nBob: Hey.\nA plain reply.") == [
        ("S1", "Alice", "Hi.", 1),
        ("S2", "Bob", "Hey.", 2),
        ("S1", "Alice", "A plain reply.", 3),
    ]


def test_text_before_the_first_inline_tag_is_a_plain_turn() -> None:
    assert _turns("Well then [S2] okay") == [("S1", "S1", "Well then", 1), ("S2", "S2", "okay", 1)]


@pytest.mark.parametrize(
    "line",
    [
        "Note the time: 5 pm.",
        "At 9:30 we leave.",
        "The rule is simple: be kind.",
        "Yes, really: it works.",
        "He said this, and then: nothing.",
        "See https://example.com for more",
        "One two three four: too many words",
        "Averyveryverylongnamethatgoeson: not a name",
        "今天我们来讨论一下这个非常重要的问题：很重要",
        "他说，“你好”：然后走了",
    ],
)
def test_a_colon_in_an_untagged_sentence_is_not_a_speaker(line: str) -> None:
    assert _turns(f"[S1] Hello.\n{line}") == [("S1", "S1", "Hello.", 1), ("S2", "S2", line, 2)]


# ---- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["", "   ", "\n\n  \n", "...\n…"])
def test_empty_script(script: str) -> None:
    error = _error(script)
    assert error.code == "empty_script"
    assert error.message == "script is empty: write one turn per line, e.g. [S1] Hello"


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("[S1] Hi.\n\n[S2]", "line 3: speaker S2 has no text"),
        ("[S1] Hi. [S2] ... ", "line 1: speaker S2 has no text"),
        ("Hi.\nAlice:", "line 2: speaker Alice has no text"),
        ("Speaker 2: ", "line 1: speaker S2 has no text"),
        ("Alice: [S2] Hi", "line 1: speaker Alice has no text"),
    ],
)
def test_empty_turn(script: str, message: str) -> None:
    error = _error(script)
    assert error.code == "empty_turn"
    assert error.message == message


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("[S1] Hi.\n[S6] Bye.", "line 2: [S6] — speaker tags go from S1 to S5"),
        ("[S0] Hi.", "line 1: [S0] — speaker tags go from S1 to S5"),
        ("ok\n\n(s7) no", "line 3: (s7) — speaker tags go from S1 to S5"),
        ("Speaker 9: no", "line 1: Speaker 9 — speaker tags go from S1 to S5"),
    ],
)
def test_tag_out_of_range(script: str, message: str) -> None:
    error = _error(script)
    assert error.code == "bad_speaker_tag"
    assert error.message == message


def test_turns_are_frozen_values() -> None:
    assert parse_script("[S1] Hi").turns == [Turn("S1", "S1", "Hi", 1)]
    with pytest.raises(AttributeError):
        parse_script("[S1] Hi").turns[0].text = "changed"  # type: ignore[misc]


def test_windows_line_endings_count_lines_right() -> None:
    assert _error("[S1] Hi\r\n[S2] Yo\r\n[S2]\r\n").message == "line 3: speaker S2 has no text"


# ---- normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, world! How are you?", "Hello, world! How are you?"),
        ("“Hi,” she said — it’s fine…", '"Hi," she said - it\'s fine...'),
        ("Pages 10–12", "Pages ten-twelve"),
        ("Hello！ How are you？ Ｉ ｈａｖｅ １２.", "Hello! How are you? I have twelve."),
        ("  lots   of\n\tspace  ", "lots of space"),
        ("zero\u200bwidth", "zerowidth"),
        ("Dr. Smith met Mr. Jones and Mrs. Brown.", "Doctor Smith met Mister Jones and Missus Brown."),
        ("Prof Li and Dr Who", "Professor Li and Doctor Who"),
        ("We went to St. Paul's.", "We went to Saint Paul's."),
        ("He lives on Baker St. now.", "He lives on Baker St. now."),
        ("Baker St. London", "Baker St. London"),
        ("I have 42 apples.", "I have forty-two apples."),
        ("1,000,000 people", "one million people"),
        ("It costs 3.5 units.", "It costs three point five units."),
        ("Agent 007", "Agent zero zero seven"),
        ("the 1st, 2nd, 3rd and 22nd", "the first, second, third and twenty-second"),
        ("In 1999 and 2024.", "In nineteen ninety-nine and twenty twenty-four."),
        ("the 1990s", "the nineteen nineties"),
        ("50% off, then 3.5 %", "fifty percent off, then three point five percent"),
        ("$5", "five dollars"),
        ("$1 and €1 and £1", "one dollar and one euro and one pound"),
        ("$5.50", "five dollars and fifty cents"),
        ("$0.99", "ninety-nine cents"),
        ("£2.01", "two pounds and one penny"),
        ("$2.5 million", "two point five million dollars"),
        ("$1,200", "one thousand two hundred dollars"),
        ("9:30", "nine thirty"),
        ("at 9:05 pm", "at nine oh five PM"),
        ("10:00 sharp", "ten o'clock sharp"),
        ("14:00 and 14:30", "fourteen hundred and fourteen thirty"),
        ("at 5pm. Then", "at five PM. Then"),
        ("at 6 a.m. tomorrow", "at six AM tomorrow"),
        ("MP3 and 4K", "MP3 and 4K"),
    ],
)
def test_normalize_english(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


@pytest.mark.parametrize("language", ["zh", "ja", "en"])
def test_normalize_keeps_cjk_punctuation_and_numbers(language: str) -> None:
    text = "你好，世界！“很好”……  我有3个苹果：再见。"
    assert normalize_text(text, language) == "你好，世界！“很好”…… 我有3个苹果：再见。"


def test_normalize_other_latin_languages_fix_punctuation_only() -> None:
    assert normalize_text("J’ai 3 pommes…", "fr") == "J'ai 3 pommes..."
