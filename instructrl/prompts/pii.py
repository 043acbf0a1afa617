"""Personal information in prompts: emails, phone numbers, card numbers, street addresses, SSNs, IPs.

InstructGPT filtered prompts for personally identifiable information before labelers saw them
(Ouyang et al. 2022, Appendix A.2). These are regular-expression detectors: they catch the common forms,
not every form, so the intake report lists what each one found for a person to review.
Standard library only: the intake runs without the web app.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass

PII_KINDS = ("email", "phone", "card", "ssn", "street_address", "ip_address")

# Every pattern runs in time linear in the text: quantifiers are bounded, or possessive (`++`) where what
# follows cannot match what they gave back. An unbounded local part made `b.b.b.…` quadratic (a 56 KB
# prompt took 7.8 s, issue 13); the bounds are RFC 5321's (local part 64, domain 255, label 63 characters).
EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]{1,64}+@[A-Za-z0-9.-]{1,255}\.[A-Za-z]{2,63}\b")
# +1 (555) 123-4567, 555-123-4567, 555.123.4567, +44 20 7946 0958: 7+ digits in phone-like groups.
PHONE = re.compile(
    r"(?<![\w.])(?<!\d[ .-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}(?![\w])(?![ .-]\d)"
)
# 13-19 digits, optionally grouped by spaces or dashes; confirmed by the Luhn checksum.
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
STREET_SUFFIX = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|"
    r"circle|cir|parkway|pkwy|highway|hwy|square|sq"
)
STREET_ADDRESS = re.compile(
    rf"\b\d{{1,6}}\s++(?:[A-Z][a-zA-Z]++\.?\s++){{1,4}}(?:{STREET_SUFFIX})\b\.?", re.IGNORECASE
)
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")


@dataclass(frozen=True)
class PIIMatch:
    kind: str
    """One of PII_KINDS."""
    start: int
    end: int
    text: str


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that every payment card number satisfies (and random digit strings mostly fail)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_pii(text: str) -> list[PIIMatch]:
    """Every piece of personal information found in `text`, in order of position.

    A span claimed by a more specific detector (card, SSN, IP, email) is not reported again as a phone number.
    """
    found: list[PIIMatch] = []

    def add(kind: str, m: re.Match[str]) -> None:
        found.append(PIIMatch(kind, m.start(), m.end(), m.group(0)))

    for m in EMAIL.finditer(text):
        add("email", m)
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            add("card", m)
    for m in SSN.finditer(text):
        add("ssn", m)
    for m in IPV4.finditer(text):
        add("ip_address", m)
    for m in STREET_ADDRESS.finditer(text):
        add("street_address", m)
    claimed = _merged_spans(found)
    claimed_starts = [start for start, _ in claimed]
    for m in PHONE.finditer(text):
        if sum(c.isdigit() for c in m.group(0)) < 7:
            continue
        # The last claimed span starting before the match ends overlaps it if it ends after the match
        # starts. Testing every earlier match instead was quadratic: 100 KB of phone numbers took 4.7-7.5 s.
        i = bisect_left(claimed_starts, m.end()) - 1
        if i >= 0 and claimed[i][1] > m.start():
            continue
        add("phone", m)
    return sorted(found, key=lambda f: (f.start, f.kind))


def _merged_spans(found: list[PIIMatch]) -> list[tuple[int, int]]:
    """The (start, end) spans of `found`, overlapping ones merged: disjoint and sorted, so that both the
    starts and the ends increase."""
    merged: list[tuple[int, int]] = []
    for f in sorted(found, key=lambda f: f.start):
        if merged and f.start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], f.end))
        else:
            merged.append((f.start, f.end))
    return merged


def pii_kinds(text: str) -> list[str]:
    """The distinct kinds of personal information in `text`, sorted (empty when none)."""
    return sorted({m.kind for m in find_pii(text)})
