"""Personal data in training text: found by kind, then replaced by a placeholder (`<EMAIL>`) or the example dropped.

Kinds: e-mail addresses, phone numbers, IPv4 and IPv6 addresses, payment card numbers (13-19 digits from a card
network's range, written whole or in its groups, that pass the Luhn checksum), IBANs (that pass ISO 13616's mod-97
check) and US social security numbers. Patterns find candidates; the checksums and a few structural rules (a phone
number needs a `+` country code, the separators of a written number or a national mobile's shape, an IPv4 address
four octets of at most 255) keep prices, dates, years, versions and ids out. Where two finds overlap, the more
specific kind wins (`KINDS` order). Precision and recall per kind are measured on planted PII in real conversation
texts by `benchmarks/pii.py`.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass

KINDS = ("email", "iban", "card", "ssn", "ipv6", "ipv4", "phone")
PLACEHOLDER = {kind: f"<{kind.upper()}>" for kind in KINDS}

# Boundaries are ASCII (and Latin) letters and digits only: text written without spaces (Chinese, Japanese) may run
# straight into an address or a number, and an ideograph is no part of one.
_LATIN = "A-Za-z0-9\u00c0-\u024f"
_EMAIL = re.compile(
    rf"(?<![{_LATIN}._%+-])[{_LATIN}][{_LATIN}._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{{2,24}}(?![A-Za-z0-9-])"
)
_IBAN = re.compile(
    r"(?:(?<=IBAN)|(?<![A-Za-z0-9]))[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"
)
_CARD = re.compile(r"(?<![A-Za-z0-9.,-])\d(?:[ -]?\d){12,18}(?![0-9])")
_SSN = re.compile(
    r"(?<![A-Za-z0-9-])(?!000|666|9\d\d)\d{3}(?P<sep>[- ])(?!00)\d{2}(?P=sep)(?!0000)\d{4}(?![0-9]|[- ]\d)"
)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]*\d)")
# Hex digits, at least two colons, perhaps an IPv4 tail (::ffff:10.0.0.1); `ipaddress` decides.
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:.])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:.]{4,45}(?<![.:])(?![0-9A-Fa-f:])")
# A `+` and a country code, or a written national number: a trunk 0 (or 8 in Russia) or an area code in brackets,
# groups apart, the North American 3-3-4, the Spanish 3-3-3 (6, 7 or 9 first; not a round figure written with
# spaces, 700 000 000) or a Chinese mobile's 11 digits (13-19 first); not a date (05-12-2023, 05.12.2023), and not a
# run of digit groups longer than a number is (an account number, a list of figures).
_PHONE = re.compile(
    r"(?<![A-Za-z0-9+])(?<!\d[ .-])(?!0?\d[-./]\d\d?[-./]\d{2,4}(?!\d|[./-]\d))(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
    r"|8 ?\(\d{3,5}\) ?\d{2,3}-\d{2}-\d{2}"
    r"|\(\d{2,4}\)[ .-]?\d{3,5}[ .-]?\d{3,4}"
    r"|0\d{1,4}[ /-]\d{2,8}(?:[ -]\d{2,4}){0,3}"
    r"|0\d(?:\.\d\d){4}"
    r"|(?:1[ -])?\d{3}[.-]\d{3}[.-]\d{4}"
    r"|\d{3} \d{3} \d{4}"
    r"|[6-9]\d{2} (?!000 000)\d{3} \d{3}"
    r"|1[3-9]\d{9}"
    r")(?![A-Za-z0-9]|[ .-]\d)"
)


@dataclass(frozen=True)
class Find:
    kind: str
    start: int
    end: int
    text: str


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


# How card numbers are written: all together, or in the groups the networks print.
_CARD_GROUPS = ((4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4), (4, 4, 4, 1), (4, 4, 4, 2), (4, 4, 4, 3))


def _card_ok(text: str) -> bool:
    digits = _digits(text)
    groups = tuple(len(g) for g in re.split(r"[ -]", text))
    issued = digits[0] in "3456" or 2221 <= int(digits[:4]) <= 2720
    written = len(groups) == 1 or groups in _CARD_GROUPS
    return 13 <= len(digits) <= 19 and issued and written and luhn_ok(digits) and len(set(digits)) > 1


def _valid(kind: str, text: str) -> bool:
    if kind == "card":
        return _card_ok(text)
    if kind == "iban":
        return iban_ok(text)
    if kind == "ipv4":
        return all(int(part) <= 255 for part in text.split(".")) and not text.startswith("0.")
    if kind == "ipv6":
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
        # Three colons, or a `::` between two groups (fe80::751); not `::1` or a time of day.
        return text.count(":") >= 3 or ("::" in text and not text.startswith("::") and not text.endswith("::"))
    if kind == "phone":
        return 7 <= len(_digits(text)) <= 15
    return True


def _shortened(kind: str, text: str) -> str | None:
    """The longest valid start of `text`, dropping trailing groups: a card number or IBAN followed by a number or a
    short word ("4111 1111 1111 1111 2 tsp") is still found."""
    candidate = text
    while candidate:
        if _valid(kind, candidate):
            return candidate
        cut = max(candidate.rfind(" "), candidate.rfind("-"))
        if cut <= 0:
            return None
        candidate = candidate[:cut]
    return None


_PATTERNS = {
    "email": _EMAIL,
    "iban": _IBAN,
    "card": _CARD,
    "ssn": _SSN,
    "ipv6": _IPV6,
    "ipv4": _IPV4,
    "phone": _PHONE,
}


def find(text: str) -> list[Find]:
    """Every piece of personal data in `text`, in order, without overlaps (the earlier kind in `KINDS` wins)."""
    taken: list[Find] = []
    for kind in KINDS:
        for match in _PATTERNS[kind].finditer(text):
            found = _shortened(kind, match.group()) if kind in ("card", "iban") else match.group()
            if found is None or not _valid(kind, found):
                continue
            start, end = match.start(), match.start() + len(found)
            if any(start < f.end and f.start < end for f in taken):
                continue
            taken.append(Find(kind, start, end, found))
    return sorted(taken, key=lambda f: f.start)


def scrub(text: str) -> tuple[str, Counter]:
    """`text` with each find replaced by its kind's placeholder, and the finds counted by kind."""
    finds = find(text)
    out, last = [], 0
    for f in finds:
        out += [text[last : f.start], PLACEHOLDER[f.kind]]
        last = f.end
    out.append(text[last:])
    return "".join(out), Counter(f.kind for f in finds)
