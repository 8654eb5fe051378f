"""Text hygiene: ``clean_text`` and the ``CleanText`` field type, directly and through the apps.

A production visual-entailment service crashed on text carrying invisible characters; here such text
is cleaned in the worker's validation, before the length bounds, and refused with a 422
naming the field when nothing visible is left.
"""

from __future__ import annotations

import unicodedata

import pytest
from pydantic import BaseModel, Field, ValidationError

from watchkeeper.apps.chaos import Chaos
from watchkeeper.apps.embed import Embed
from watchkeeper.contract import (
    CLEAN_TEXT_NOTE,
    MAX_COMBINING_RUN,
    CleanText,
    CleanTextOrEmpty,
    clean_text,
)
from watchkeeper.worker.loop import describe_validation

ZWSP, ZWNJ, ZWJ, LRM, RLM = "\u200b", "\u200c", "\u200d", "\u200e", "\u200f"
BOM, SOFT_HYPHEN, WORD_JOINER = "\ufeff", "\u00ad", "\u2060"
BIDI = "\u202a\u202b\u202c\u202d\u202e"  # LRE, RLE, PDF, LRO, RLO
ISOLATES = "\u2066\u2067\u2068\u2069"  # LRI, RLI, FSI, PDI (also category Cf)
INVISIBLE = ZWSP + ZWNJ + ZWJ + LRM + RLM + BOM + SOFT_HYPHEN + WORD_JOINER + BIDI + ISOLATES


def embed_text(text: object) -> str:
    return str(Embed.Inputs.model_validate({"text": text}).text)


def chaos_tag(tag: object) -> str:
    return str(Chaos.Inputs.model_validate({"tag": tag}).tag)


def refusal(cls: type[BaseModel], data: dict[str, object]) -> dict[str, str]:
    """The one problem the worker reports for ``data`` (as in a 422 body)."""
    with pytest.raises(ValidationError) as info:
        cls.model_validate(data)
    (problem,) = describe_validation("inputs", info.value, cls).details["errors"]
    return problem


# --- clean_text ------------------------------------------------------------------------


def test_nfc_composes_a_combining_accent() -> None:
    assert clean_text("e\u0301") == "\u00e9"
    assert clean_text("Cafe\u0301") == "Caf\u00e9"
    assert len(clean_text("e\u0301")) == 1


def test_nfc_composes_across_a_removed_invisible_character() -> None:
    assert clean_text("e" + ZWSP + "\u0301") == "\u00e9"


@pytest.mark.parametrize("char", list(INVISIBLE), ids=lambda c: f"U+{ord(c):04X}")
def test_each_invisible_format_character_is_removed(char: str) -> None:
    assert clean_text(f"ab{char}cd") == "abcd"


def test_zero_width_spaces_joiners_and_bom_are_removed() -> None:
    assert clean_text(f"{BOM}pay{ZWSP}pal{ZWJ}.com{ZWNJ}{WORD_JOINER}") == "paypal.com"


def test_bidi_override_is_removed() -> None:
    # "invoice_\u202egpj.exe" renders as "invoice_exe.jpg"; cleaned, it says what it is.
    assert clean_text("invoice_\u202egpj.exe") == "invoice_gpj.exe"
    assert clean_text("\u202bright-to-left\u202c") == "right-to-left"


def test_control_characters_are_removed_but_newlines_and_tabs_kept() -> None:
    assert clean_text("a\x00b\x07c\x1bd\x7fe\x9bf") == "abcdef"
    assert clean_text("col1\tcol2\nrow2") == "col1\tcol2\nrow2"


@pytest.mark.parametrize(
    "raw", ["one\r\ntwo", "one\rtwo", "one\x85two", "one\u2028two", "one\u2029two"]
)
def test_line_breaks_become_lf(raw: str) -> None:
    assert clean_text(raw) == "one\ntwo"


def test_crlf_is_one_newline_not_two() -> None:
    assert clean_text("a\r\n\r\nb\r") == "a\n\nb"


def test_leading_and_trailing_whitespace_and_invisibles_are_stripped() -> None:
    assert clean_text(f" {BOM}\t\n hello world \u3000\u00a0{ZWSP}\n") == "hello world"


@pytest.mark.parametrize(
    "text",
    [
        "\u4f60\u597d\uff0c\u4e16\u754c",  # CJK with a full-width comma
        "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
        "\ud55c\uad6d\uc5b4",  # Hangul syllables (NFC already)
        "\U0001f642 \U0001f680 \u2764\ufe0f",  # emoji with a variation selector
        "\U0001f44d\U0001f3fd",  # skin-tone modifier
        "\U0001f1eb\U0001f1f7",  # a flag: two regional indicators
        f"\U0001f468{ZWJ}\U0001f469{ZWJ}\U0001f467",  # family: a ZWJ sequence
        f"\U0001f469\U0001f3fd{ZWJ}\U0001f4bb",  # woman technologist, medium skin tone
        f"\U0001f3f3\ufe0f{ZWJ}\U0001f308",  # rainbow flag
        "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",  # England
        "\U00020000\U0002a6d6",  # CJK extension B, outside the BMP
    ],
)
def test_emoji_and_cjk_are_kept_intact(text: str) -> None:
    assert clean_text(text) == text
    assert clean_text(f"{ZWSP} {text} {BOM}") == text


def test_zero_width_joiner_outside_an_emoji_sequence_is_removed() -> None:
    assert clean_text(f"a{ZWJ}b \U0001f642{ZWJ} {ZWJ}\U0001f642") == "ab \U0001f642 \U0001f642"


def test_runs_of_combining_marks_are_cut_to_the_stream_safe_limit() -> None:
    zalgo = "Z" + "\u0301\u0316\u0358" * 40 + "a"
    decomposed = unicodedata.normalize("NFD", clean_text(zalgo))
    assert decomposed[0] == "Z" and decomposed[-1] == "a"
    assert len(decomposed) == 2 + MAX_COMBINING_RUN
    assert all(unicodedata.combining(ch) for ch in decomposed[1:-1])


def test_runs_within_the_limit_are_kept() -> None:
    thirty = "o" + "\u0308" * MAX_COMBINING_RUN
    assert clean_text(thirty) == unicodedata.normalize("NFC", thirty)
    assert clean_text("Ti\u00ea\u0301ng Vi\u00ea\u0323t") == "Ti\u1ebfng Vi\u1ec7t"  # two marks each


def test_long_runs_of_combining_marks_do_not_make_nfc_quadratic() -> None:
    import time

    # CPython's NFC takes over 20 s on 64,000 alternating accents; cut first, it is linear.
    started = time.perf_counter()
    cleaned = clean_text("a" + "\u0301\u0316" * 500_000)
    assert time.perf_counter() - started < 2.0
    assert len(unicodedata.normalize("NFD", cleaned)) == 1 + MAX_COMBINING_RUN


def test_all_invisible_text_cleans_to_empty() -> None:
    assert clean_text(INVISIBLE + " \t\r\n\x00" + INVISIBLE) == ""


def test_lone_surrogates_are_left_for_the_str_validation() -> None:
    assert clean_text("a\ud800") == "a\ud800"


def test_clean_text_is_idempotent() -> None:
    once = clean_text(f" {BOM}Cafe\u0301\r\n{ZWSP}x\x00\t\U0001f642 ")
    assert clean_text(once) == once


def test_a_large_text_is_cleaned_quickly() -> None:
    import time

    text = ("\u4e16\u754c e\u0301 \U0001f642" + ZWSP) * 200_000  # 1.6 M code points
    started = time.perf_counter()
    cleaned = clean_text(text)
    assert time.perf_counter() - started < 2.0  # about 0.4 s here
    assert cleaned == "\u4e16\u754c \u00e9 \U0001f642" * 200_000


# --- the field types -------------------------------------------------------------------


def test_embed_text_is_cleaned() -> None:
    raw = f"{BOM}  Cafe\u0301 {ZWSP}na\u00efve\u202e\r\nnext\x00 line\t "
    assert embed_text(raw) == "Caf\u00e9 na\u00efve\nnext line"


def test_chaos_tag_is_cleaned() -> None:
    assert chaos_tag(f"{ZWSP}kill\u202e-1\x00\r\n") == "kill-1"


def test_embed_refuses_all_invisible_text_naming_the_field() -> None:
    problem = refusal(Embed.Inputs, {"text": f"{ZWSP}{BOM} \u202e\x00\r\n"})
    assert problem["field"] == "inputs.text"
    assert "empty" in problem["message"]


def test_embed_refuses_empty_text() -> None:
    assert refusal(Embed.Inputs, {"text": ""})["field"] == "inputs.text"


def test_chaos_tag_may_be_empty_or_all_invisible() -> None:
    assert chaos_tag("") == ""
    assert chaos_tag(f"{ZWSP}{BOM}\u202e \x00") == ""
    assert Chaos.Inputs.model_validate({}).tag == ""


def test_max_length_applies_after_cleaning() -> None:
    class Bounded(BaseModel):
        text: CleanText = Field(max_length=20)

    padded = "0123456789" + ZWSP * 10_000
    assert Bounded.model_validate({"text": padded}).text == "0123456789"
    with pytest.raises(ValidationError, match="at most 20"):
        Bounded.model_validate({"text": "x" * 21 + ZWSP})


def test_embed_bounds_apply_after_cleaning() -> None:
    assert embed_text("a" * 10_000 + ZWSP * 10_000 + "\x00" * 1000) == "a" * 10_000
    problem = refusal(Embed.Inputs, {"text": "a" * 10_001})
    assert problem["field"] == "inputs.text"
    assert "10000" in problem["message"]


def test_chaos_tag_bound_applies_after_cleaning() -> None:
    assert chaos_tag("t" * 200 + BOM * 500) == "t" * 200
    assert refusal(Chaos.Inputs, {"tag": "t" * 201})["field"] == "inputs.tag"


def test_nfc_can_bring_a_text_under_its_bound() -> None:
    assert chaos_tag("e\u0301" * 200) == "\u00e9" * 200


@pytest.mark.parametrize("value", [5, None, ["a"], {"a": 1}, 1.5, True])
def test_non_text_is_refused_as_the_wrong_type(value: object) -> None:
    for cls, field in ((Embed.Inputs, "text"), (Chaos.Inputs, "tag")):
        problem = refusal(cls, {field: value})
        assert problem["field"] == f"inputs.{field}"
        assert "string" in problem["message"]


def test_a_lone_surrogate_is_refused_not_passed_on() -> None:
    assert refusal(Embed.Inputs, {"text": "a\ud800b"})["field"] == "inputs.text"
    assert refusal(Chaos.Inputs, {"tag": "\udfff"})["field"] == "inputs.tag"


def test_utf8_bytes_from_a_multipart_field_are_cleaned_too() -> None:
    assert embed_text(f"{BOM}caf\u00e9{ZWSP}\r\n".encode()) == "caf\u00e9"
    assert chaos_tag(bytearray(b"ok\xe2\x80\x8b")) == "ok"


def test_bytes_that_are_not_utf8_are_refused() -> None:
    problem = refusal(Embed.Inputs, {"text": b"\xff\xfe\x00"})
    assert problem == {"field": "inputs.text", "message": "is not valid UTF-8 text"}


def test_or_empty_variant_outside_the_apps() -> None:
    class Note(BaseModel):
        note: CleanTextOrEmpty = ""

    assert Note.model_validate({"note": f" {ZWSP} "}).note == ""
    assert Note.model_validate({"note": "a\x00b"}).note == "ab"


# --- JSON schema -----------------------------------------------------------------------


def test_schema_describes_the_cleaning_when_the_field_has_no_description() -> None:
    class Plain(BaseModel):
        text: CleanText = Field(max_length=50)

    prop = Plain.model_json_schema()["properties"]["text"]
    assert prop == {"type": "string", "maxLength": 50, "title": "Text", "description": CLEAN_TEXT_NOTE}
    for what in ("NFC", "zero-width", "bidi", "control", "stripped", "before the length"):
        assert what in CLEAN_TEXT_NOTE


def test_app_schemas_keep_their_bounds_and_mention_the_cleaning() -> None:
    text = Embed.Inputs.model_json_schema()["properties"]["text"]
    assert (text["type"], text["minLength"], text["maxLength"]) == ("string", 1, 10_000)
    assert "invisible" in text["description"]
    tag = Chaos.Inputs.model_json_schema()["properties"]["tag"]
    assert (tag["type"], tag["maxLength"], tag["default"]) == ("string", 200, "")
    assert "invisible" in tag["description"]
