"""Personal data in training text: found by kind, then replaced by a placeholder (`<EMAIL>`) or the example dropped.

Kinds: e-mail addresses, phone numbers, IPv4 and IPv6 addresses, payment card numbers (13-19 digits that pass the
Luhn checksum), IBANs (that pass ISO 13616's mod-97 check) and US social security numbers. Patterns find
candidates; the checksums and a few structural rules (a phone number needs a `+` country code or the separators of
a written number, an IPv4 address four octets of at most 255) keep prices, dates, versions and ids out. Where two
finds overlap, the more specific kind wins (`KINDS` order). Precision and recall per kind are measured on planted
PII in real conversation texts by `benchmarks/pii.py`.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass

KINDS = ("email", "iban", "card", "ssn", "ipv6", "ipv4", "phone")
PLACEHOLDER = {kind: f"<{kind.upper()}>" for kind in KINDS}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?(?![A-Za-z0-9])")
_CARD = re.compile(r"(?<![\d.,-])(?:\d[ -]?){12,18}\d(?![\d.,]\d|-\d)")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]*\d)")
# Hex digits and at least two colons; `ipaddress` decides.
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{4,39}(?![0-9A-Fa-f:])")
# A `+` and a country code, or a written national number: a trunk 0 or an area code in brackets, groups apart; not
# a run of digit groups longer than a number is (an account number, a list of figures).
_PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
    r"|\(\d{2,4}\)[ .-]?\d{3,4}[ .-]?\d{3,4}"
    r"|0\d{1,4}[ /.-]\d{2,4}(?:[ .-]\d{2,4}){1,3}"
    r"|\d{3}[.-]\d{3}[.-]\d{4}"
    r")(?!\w|[ .-]\d)"
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


def _valid(kind: str, text: str) -> bool:
    if kind == "card":
        digits = _digits(text)
        return 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1
    if kind == "iban":
        return iban_ok(text)
    if kind == "ipv4":
        return all(int(part) <= 255 for part in text.split(".")) and not text.startswith("0.")
    if kind == "ipv6":
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
        return text.count(":") >= 3
    if kind == "phone":
        return 7 <= len(_digits(text)) <= 15
    return True


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
            if not _valid(kind, match.group()):
                continue
            if any(match.start() < f.end and f.start < match.end() for f in taken):
                continue
            taken.append(Find(kind, match.start(), match.end(), match.group()))
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
