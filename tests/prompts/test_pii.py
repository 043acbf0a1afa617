"""Personal-information detectors: what each one catches and the look-alikes it must leave alone."""

from __future__ import annotations

import pytest

from instructrl.prompts.pii import find_pii, luhn_valid, pii_kinds


@pytest.mark.parametrize(
    ("text", "kind", "found"),
    [
        ("write to john.doe@example.com today", "email", "john.doe@example.com"),
        ("call +1 (555) 123-4567 after six", "phone", "+1 (555) 123-4567"),
        ("my number is 555-123-4567.", "phone", "555-123-4567"),
        ("ring +44 20 7946 0958", "phone", "+44 20 7946 0958"),
        ("charge 4111 1111 1111 1111 please", "card", "4111 1111 1111 1111"),
        ("card 5500-0000-0000-0004", "card", "5500-0000-0000-0004"),
        ("ssn 123-45-6789", "ssn", "123-45-6789"),
        ("I live at 221 Baker Street, London", "street_address", "221 Baker Street"),
        ("send it to 1600 Pennsylvania Ave", "street_address", "1600 Pennsylvania Ave"),
        ("ping 192.168.0.12 for me", "ip_address", "192.168.0.12"),
    ],
)
def test_each_detector_finds_its_kind(text, kind, found):
    matches = find_pii(text)
    assert [(m.kind, m.text) for m in matches] == [(kind, found)]
    assert text[matches[0].start : matches[0].end] == found


@pytest.mark.parametrize(
    "text",
    [
        "In 2021 there were 1,000 people at 3 events",
        "what is 3.14159 times 2?",
        "list 10 ways to cook rice",
        "card 4111 1111 1111 1112",  # fails the Luhn check, and is not a phone number either
        "version 1.2.3 of the library",
        "the years 1999-2000",
        "Write a poem about the sea",
    ],
)
def test_look_alikes_are_not_personal_information(text):
    assert find_pii(text) == []


def test_luhn_checksum():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("79927398710")


def test_pii_kinds_lists_distinct_kinds_sorted():
    text = "mail a@b.co or c@d.org, or call 555-123-4567"
    assert pii_kinds(text) == ["email", "phone"]


@pytest.mark.parametrize(
    ("text", "kind", "found"),
    [
        ("mail first.last+tag@mail.example.co.uk now", "email", "first.last+tag@mail.example.co.uk"),
        ("from b.b.b@b.b.com", "email", "b.b.b@b.b.com"),
        ("office at 10 Downing St. in London", "street_address", "10 Downing St."),
        ("ship to 42 Old Mill Lane", "street_address", "42 Old Mill Lane"),
        ("fax 555.123.4567", "phone", "555.123.4567"),
    ],
)
def test_more_forms_each_detector_finds(text, kind, found):
    assert [(m.kind, m.text) for m in find_pii(text)] == [(kind, found)]


ADVERSARIAL = {
    # Each ~200 KB; the unbounded e-mail pattern took ~50 s on the first (quadratic backtracking).
    "dotted words": "b." * 100_000,
    "at signs": "a@" * 100_000,
    "one local part, endless domain": "a@" + "b." * 100_000,
    "local parts that reach an @": ("b." * 32 + "@" + "b." * 127 + "bb1") * 625,
    "digits": "1" * 200_000,
    "digits and spaces": "1 " * 100_000,
    "digits and dashes": "1-" * 100_000,
    "digits and dots": "1." * 100_000,
    "bracketed area codes": "(12) " * 40_000,
    "street words without a suffix": "1 " + "Abc " * 50_000,
    "numbers and words": "12 Abc " * 28_000,
    "spaces after a number": "1" + " " * 200_000 + "x",
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_every_pattern_is_linear_on_adversarial_text(name):
    import time

    text = ADVERSARIAL[name]
    start = time.perf_counter()
    find_pii(text)
    assert time.perf_counter() - start < 1.0, f"{name}: {len(text):,} characters took too long"


# One adversarial unit per kind: text made only of matches (or near-matches) of that detector.
MANY_MATCHES = {
    "email": "ann.lee@example.com ",
    "phone": "555-123-4567; ",
    "card": "4111 1111 1111 1111, ",
    "ssn": "123-45-6789; ",
    "street_address": "221 Baker Street ",
    "ip_address": "192.168.0.12 ",
}


@pytest.mark.parametrize("kind", MANY_MATCHES)
def test_find_pii_time_grows_linearly_with_many_matches_of_one_kind(kind):
    # The phone check compared each match with every earlier one: 100 KB of phone numbers took 4.7-7.5 s,
    # x4.5-8 per doubling (issue 23). 8x the text may take at most 20x the time (quadratic would be 64x);
    # the best of three runs keeps a busy machine from deciding it.
    import time

    def best_time(text: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            found = find_pii(text)
            times.append(time.perf_counter() - start)
        assert found and all(f.kind == kind for f in found)
        return min(times)

    unit = MANY_MATCHES[kind]
    small, large = unit * (25_000 // len(unit)), unit * (200_000 // len(unit))
    assert best_time(large) < 20 * best_time(small), f"{kind}: find_pii is not linear in the text"
