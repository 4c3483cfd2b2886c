"""Personal data detection (`lib/llm/pii.find`): precision and recall per kind, on PII planted in real texts.

    .venv/bin/python benchmarks/pii.py [--per-kind 300] [--seed 42] [--examples 10]

Texts: every message text of the OASST2 trees (en, es, zh, ru, de, ja, ...) and every distinct Human / Assistant
turn of the HH-RLHF transcripts, from `../shared/data/llm`. For each kind in `pii.KINDS`, PER_KIND texts (half
OASST, half HH, none used twice while the pools last) get one value of that kind, in one of the formats below
(chosen at random), inserted between words after a short lead-in in the text's language ("call me on", "llámame
al", ...; a neutral label such as "Tel.:" for other languages); in Chinese and Japanese texts lead-in and value are
written without spaces, as those languages are. The value's character span is kept. Formats:
  email  dotted, digits, subdomains, mixed case, +tags, hyphens, an accented local part;
  phone  UK, US, DE, ES, FR, IT, BR, JP, IN, CN and RU numbers, national and international (+CC) writings;
  ipv4   private, public, with a port, in a URL;      ipv6  full, compressed, upper case, link-local, short,
         bracketed with a port, IPv4-mapped, with a zone;
  card   Visa, Mastercard (5x and 2x), Amex, Discover, JCB, Diners, UnionPay; Luhn-valid; grouped with spaces,
         dashes, or not at all;
  iban   14 countries with their BBAN shapes and computed mod-97 check digits, printed (groups of 4) or compact;
  ssn    AAA-GG-SSSS (valid areas, groups and serials) and the same with spaces.
`pii.find` then runs on every planted text and on every untouched text (the real texts used for no planting).
Per kind: planted; found (a find of the right kind overlapping the planted span), recall, exact span; found only as
another kind; finds of the kind, those overlapping no planted span (false positives: on the planted texts and the
untouched texts; the source texts hold some real PII, so read the examples) and precision (finds of the kind on
a planted span of the kind / all finds of the kind). Then recall per format where it is not 100%, missed values,
where the false positives come from (up to EXAMPLES, with the kind and the text around them), and the confusion
counts of the OASST volunteers' `pii` label (value > 0) against `pii.find` finding anything in the message.
Deterministic for a seed. Exits 1 when ../shared/data is missing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from _llm_data import HH, OASST, TURN, messages, require_data

from ai_pipeline.lib.llm import pii

CJK = ("zh", "ja")
CJK_BREAKS = re.compile(r"[。，！？、]")

LEAD_INS = {
    "en": {
        "email": "you can write to me at",
        "phone": "call me on",
        "ipv4": "my server's IP is",
        "ipv6": "the IPv6 address is",
        "card": "my card number is",
        "iban": "please pay to IBAN",
        "ssn": "my SSN is",
    },
    "es": {
        "email": "escríbeme a",
        "phone": "llámame al",
        "ipv4": "la IP de mi servidor es",
        "ipv6": "la dirección IPv6 es",
        "card": "mi número de tarjeta es",
        "iban": "transfiere a la cuenta IBAN",
        "ssn": "mi número de seguro social es",
    },
    "de": {
        "email": "schreib mir an",
        "phone": "ruf mich an unter",
        "ipv4": "die IP meines Servers ist",
        "ipv6": "die IPv6-Adresse lautet",
        "card": "meine Kartennummer ist",
        "iban": "bitte überweisen an IBAN",
        "ssn": "meine SSN ist",
    },
    "fr": {
        "email": "écris-moi à",
        "phone": "appelle-moi au",
        "ipv4": "l'IP de mon serveur est",
        "ipv6": "l'adresse IPv6 est",
        "card": "mon numéro de carte est",
        "iban": "virement sur l'IBAN",
        "ssn": "mon numéro SSN est",
    },
    "it": {
        "email": "scrivimi a",
        "phone": "chiamami al",
        "ipv4": "l'IP del mio server è",
        "ipv6": "l'indirizzo IPv6 è",
        "card": "il numero della mia carta è",
        "iban": "bonifico sull'IBAN",
        "ssn": "il mio SSN è",
    },
    "pt-BR": {
        "email": "me escreva em",
        "phone": "me ligue no",
        "ipv4": "o IP do meu servidor é",
        "ipv6": "o endereço IPv6 é",
        "card": "o número do meu cartão é",
        "iban": "transfira para o IBAN",
        "ssn": "meu SSN é",
    },
    "ru": {
        "email": "напишите мне на",
        "phone": "позвоните мне по номеру",
        "ipv4": "IP моего сервера:",
        "ipv6": "адрес IPv6:",
        "card": "номер моей карты",
        "iban": "переведите на IBAN",
        "ssn": "мой SSN:",
    },
    "zh": {
        "email": "请发邮件到",
        "phone": "请打电话",
        "ipv4": "我的服务器IP是",
        "ipv6": "IPv6地址是",
        "card": "我的卡号是",
        "iban": "请汇款到账户",
        "ssn": "我的SSN是",
    },
    "ja": {
        "email": "メールは",
        "phone": "電話番号は",
        "ipv4": "サーバーのIPは",
        "ipv6": "IPv6アドレスは",
        "card": "カード番号は",
        "iban": "振込先IBANは",
        "ssn": "SSNは",
    },
}
NEUTRAL = {
    "email": "E-mail:",
    "phone": "Tel.:",
    "ipv4": "IP:",
    "ipv6": "IPv6:",
    "card": "Card:",
    "iban": "IBAN:",
    "ssn": "SSN:",
}
WRAPS = (("", ""), ("", ""), ("", ""), ("", "."), ("", ","), ("(", ")"), ('"', '"'), ("", ";"))

FIRST = ("anna", "john", "maria", "li", "oleg", "sofia", "pierre", "kenji", "fatima", "lucas", "emma", "raj")
LAST = ("smith", "garcia", "mueller", "wang", "ivanova", "rossi", "dubois", "tanaka", "khan", "silva", "brown")
DOMAINS = ("example.com", "gmail.com", "mail.co.uk", "web.de", "yahoo.es", "outlook.fr", "company.io", "posteo.net")
IBAN_BBAN = {  # country: BBAN shape (n digit, a upper-case letter, c either)
    "DE": "18n",
    "GB": "4a14n",
    "FR": "10n11c2n",
    "ES": "20n",
    "IT": "1a10n12c",
    "NL": "4a10n",
    "BE": "12n",
    "CH": "5n12c",
    "PL": "24n",
    "AT": "16n",
    "PT": "21n",
    "IE": "4a14n",
    "SE": "20n",
    "NO": "11n",
}
CARDS = {  # brand: (prefixes, length, grouping)
    "Visa": (("4",), 16, (4, 4, 4, 4)),
    "Mastercard 5x": (("51", "52", "53", "54", "55"), 16, (4, 4, 4, 4)),
    "Mastercard 2x": (("2221", "2720", "2300"), 16, (4, 4, 4, 4)),
    "Amex": (("34", "37"), 15, (4, 6, 5)),
    "Discover": (("6011", "65"), 16, (4, 4, 4, 4)),
    "JCB": (("35",), 16, (4, 4, 4, 4)),
    "Diners": (("36", "38"), 14, (4, 6, 4)),
    "UnionPay 19": (("62",), 19, (4, 4, 4, 4, 3)),
}


@dataclass
class Text:
    source: str  # "oasst" or "hh"
    lang: str
    text: str
    pii_label: float | None = None  # OASST volunteers' labels.pii.value


@dataclass
class Planted:
    kind: str
    form: str
    lang: str
    source: str
    text: str
    start: int
    end: int
    cjk: bool


# --- data ---------------------------------------------------------------------------------------------------------


def load_texts() -> tuple[list[Text], list[Text]]:
    """Every non-blank OASST message (with its language and pii label) and every distinct HH turn."""
    oasst, hh, seen = [], [], set()
    with OASST.open() as lines:
        for line in lines:
            for m in messages(json.loads(line)["prompt"]):
                if m["text"].strip():
                    label = (m.get("labels") or {}).get("pii")
                    oasst.append(Text("oasst", m.get("lang") or "", m["text"], label["value"] if label else None))
    with gzip.open(HH, "rt") as lines:
        for line in lines:
            row = json.loads(line)
            for transcript in (row["chosen"], row["rejected"]):
                for turn in TURN.split(transcript):
                    turn = turn.strip()
                    if turn and turn not in seen:
                        seen.add(turn)
                        hh.append(Text("hh", "en", turn))
    return oasst, hh


# --- values -------------------------------------------------------------------------------------------------------


class Values:
    """Random PII values by kind, each with the name of its format."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.formats: dict[str, list[tuple[str, Callable[[], str]]]] = {
            "email": self._emails(),
            "phone": self._phones(),
            "ipv4": self._ipv4s(),
            "ipv6": self._ipv6s(),
            "card": [
                (f"{brand}, {sep_name}", self._card(brand, sep))
                for brand in CARDS
                for sep_name, sep in (("spaces", " "), ("dashes", "-"), ("no separator", ""))
            ],
            "iban": [
                (f"{country}, {style}", self._iban(country, style == "printed"))
                for country in IBAN_BBAN
                for style in ("printed", "compact")
            ],
            "ssn": [
                ("AAA-GG-SSSS", lambda: "-".join(self._ssn())),
                ("AAA-GG-SSSS", lambda: "-".join(self._ssn())),
                ("AAA-GG-SSSS", lambda: "-".join(self._ssn())),
                ("AAA GG SSSS", lambda: " ".join(self._ssn())),
            ],
        }

    def draw(self, kind: str) -> tuple[str, str]:
        form, make = self.formats[kind][int(self.rng.integers(len(self.formats[kind])))]
        return form, make()

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def d(self, n: int, first: str = "0123456789") -> str:
        """n random digits, the first one from `first`."""
        return self.pick(first) + "".join(str(int(x)) for x in self.rng.integers(0, 10, n - 1))

    def _emails(self):
        def name():
            return self.pick(FIRST), self.pick(LAST)

        def dotted():
            f, last = name()
            return f"{f}.{last}@{self.pick(DOMAINS)}"

        def digits():
            f, last = name()
            return f"{f}{last}{int(self.rng.integers(1, 999))}@{self.pick(DOMAINS)}"

        def subdomain():
            f, last = name()
            return f"{f[0]}_{last}@mail.{self.pick(('uni-lyon.fr', 'cs.example.edu', 'dept.gov.uk'))}"

        def mixed_case():
            f, last = name()
            return f"{f.title()}.{last.title()}@{self.pick(DOMAINS).title()}"

        def tag():
            f, last = name()
            return f"{f}{last}+{self.pick(('news', 'shop', 'x1'))}@gmail.com"

        def hyphen():
            f, last = name()
            return f"{f}-{last}@{self.pick(('my-company.com', 'example.org', 'k-mail.de'))}"

        def accented():
            return f"{self.pick(('josé', 'zoë', 'jürgen', 'françois'))}.{self.pick(LAST)}@{self.pick(DOMAINS)}"

        return [
            ("first.last@domain", dotted),
            ("name123@domain", digits),
            ("f_last@mail.sub.domain", subdomain),
            ("Mixed.Case@Domain.Com", mixed_case),
            ("name+tag@gmail.com", tag),
            ("first-last@hyphen-domain", hyphen),
            ("accented local part", accented),
        ]

    def _phones(self):
        d = self.d
        area = "23456789"
        return [
            ("UK +44 20 7946 0958", lambda: f"+44 20 {d(4, area)} {d(4)}"),
            ("UK 020 7946 0958", lambda: f"020 {d(4, area)} {d(4)}"),
            ("UK mobile 07700 900123", lambda: f"07{d(3)} {d(6)}"),
            ("US (555) 123-4567", lambda: f"({d(3, area)}) {d(3, area)}-{d(4)}"),
            ("US 555-123-4567", lambda: f"{d(3, area)}-{d(3, area)}-{d(4)}"),
            ("US 555.123.4567", lambda: f"{d(3, area)}.{d(3, area)}.{d(4)}"),
            ("US 555 123 4567", lambda: f"{d(3, area)} {d(3, area)} {d(4)}"),
            ("US +1 415 555 0134", lambda: f"+1 {d(3, area)} {d(3, area)} {d(4)}"),
            ("US +1-415-555-0134", lambda: f"+1-{d(3, area)}-{d(3, area)}-{d(4)}"),
            ("US 1-800-555-0199", lambda: f"1-800-{d(3, area)}-{d(4)}"),
            ("DE 030 1234 5678", lambda: f"030 {d(4, area)} {d(4)}"),
            ("DE +49 30 12345678", lambda: f"+49 30 {d(8, area)}"),
            ("DE mobile 0151 23456789", lambda: f"015{d(1)} {d(8)}"),
            ("DE +49 (0)30 1234 5678", lambda: f"+49 (0)30 {d(4, area)} {d(4)}"),
            ("ES +34 612 345 678", lambda: f"+34 6{d(2)} {d(3)} {d(3)}"),
            ("ES 612 345 678", lambda: f"6{d(2)} {d(3)} {d(3)}"),
            ("FR 06 12 34 56 78", lambda: f"06 {d(2)} {d(2)} {d(2)} {d(2)}"),
            ("FR +33 6 12 34 56 78", lambda: f"+33 6 {d(2)} {d(2)} {d(2)} {d(2)}"),
            ("FR 01.23.45.67.89", lambda: f"01.{d(2)}.{d(2)}.{d(2)}.{d(2)}"),
            ("IT +39 06 1234 5678", lambda: f"+39 06 {d(4)} {d(4)}"),
            ("IT mobile 333 123 4567", lambda: f"3{d(2)} {d(3)} {d(4)}"),
            ("BR +55 11 91234-5678", lambda: f"+55 11 9{d(4)}-{d(4)}"),
            ("BR (11) 91234-5678", lambda: f"(11) 9{d(4)}-{d(4)}"),
            ("JP 03-1234-5678", lambda: f"03-{d(4)}-{d(4)}"),
            ("JP mobile 090-1234-5678", lambda: f"090-{d(4)}-{d(4)}"),
            ("IN +91 98765 43210", lambda: f"+91 9{d(4)} {d(5)}"),
            ("CN +86 138 0013 8000", lambda: f"+86 13{d(1)} {d(4)} {d(4)}"),
            ("CN mobile 13800138000", lambda: f"13{d(9)}"),
            ("RU +7 495 123-45-67", lambda: f"+7 495 {d(3)}-{d(2)}-{d(2)}"),
            ("RU 8 (495) 123-45-67", lambda: f"8 (495) {d(3)}-{d(2)}-{d(2)}"),
        ]

    def _octet(self, low: int = 1) -> int:
        return int(self.rng.integers(low, 255))

    def _ipv4s(self):
        o = self._octet

        def public():
            return f"{self.pick((23, 51, 84, 142, 185, 203))}.{o(0)}.{o(0)}.{o()}"

        return [
            ("private 192.168.x.x", lambda: f"192.168.{o(0)}.{o()}"),
            ("private 10.x.x.x", lambda: f"10.{o(0)}.{o(0)}.{o()}"),
            ("public", public),
            ("with a port", lambda: f"{{{public()}}}:{self.pick((22, 80, 8080, 5432))}"),
            ("in a URL", lambda: f"http://{{{public()}}}/admin"),
        ]

    def _ipv6s(self):
        def h(n: int = 1) -> list[str]:
            return [f"{int(x):x}" for x in self.rng.integers(0, 65536, n)]

        def full():
            return ":".join(f"{int(x):04x}" for x in self.rng.integers(0, 65536, 8))

        return [
            ("full", full),
            ("compressed", lambda: "2001:db8:" + ":".join(h(2)) + "::" + ":".join(h(2))),
            ("upper case", lambda: full().upper()),
            ("link-local fe80::", lambda: "fe80::" + ":".join(h(4))),
            ("short 2001:db8::x", lambda: "2001:db8::" + h()[0]),
            ("shortest fe80::x", lambda: "fe80::" + h()[0]),
            ("bracketed with a port", lambda: f"[{{2001:db8:{':'.join(h(2))}::{h()[0]}}}]:{self.pick((443, 8080))}"),
            (
                "IPv4-mapped ::ffff:a.b.c.d",
                lambda: f"::ffff:{self._octet()}.{self._octet(0)}.{self._octet(0)}.{self._octet()}",
            ),
            ("with a zone %eth0", lambda: "{fe80::" + ":".join(h(4)) + "}%eth0"),
        ]

    def _card(self, brand: str, sep: str) -> Callable[[], str]:
        prefixes, length, groups = CARDS[brand]

        def make() -> str:
            body = self.pick(prefixes)
            body += self.d(length - 1 - len(body))
            check = next(c for c in "0123456789" if pii.luhn_ok(body + c))
            digits, out, at = body + check, [], 0
            for g in groups:
                out.append(digits[at : at + g])
                at += g
            return sep.join(out)

        return make

    def _iban(self, country: str, printed: bool) -> Callable[[], str]:
        shape = re.findall(r"(\d+)([nac])", IBAN_BBAN[country])

        def make() -> str:
            bban = ""
            for count, cls in shape:
                for _ in range(int(count)):
                    if cls == "n" or (cls == "c" and self.rng.random() < 0.8):
                        bban += str(int(self.rng.integers(10)))
                    else:
                        bban += chr(65 + int(self.rng.integers(26)))
            numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
            iban = f"{country}{98 - int(numeric) % 97:02d}{bban}"
            assert pii.iban_ok(iban)
            return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if printed else iban

        return make

    def _ssn(self) -> tuple[str, str, str]:
        area = int(self.rng.integers(1, 900))
        area = 667 if area == 666 else area
        return f"{area:03d}", f"{int(self.rng.integers(1, 100)):02d}", f"{int(self.rng.integers(1, 10000)):04d}"


def plant(source: Text, kind: str, form: str, value: str, rng: np.random.Generator) -> Planted:
    """`value` after a lead-in, between two words of the text (after a sentence break in Chinese and Japanese).

    Where `value` marks its personal part with braces (an address in a URL, before a port), the span is that part.
    """
    text, lang = source.text, source.lang
    marked = "{" in value
    part, part_end = (value.index("{"), value.index("}") - 1) if marked else (0, len(value))
    value = value.replace("{", "").replace("}", "")
    cjk = lang in CJK
    lead = LEAD_INS.get(lang, NEUTRAL)[kind]
    if cjk:
        breaks = [m.end() for m in CJK_BREAKS.finditer(text)] or [len(text)]
        at = breaks[int(rng.integers(len(breaks)))]
        insert = f"{lead}{value}。"
        start = at + len(lead)
    else:
        spaces = [m.start() for m in re.finditer(r"\s", text)] or [len(text)]
        at = spaces[int(rng.integers(len(spaces)))]
        pre, post = WRAPS[int(rng.integers(len(WRAPS)))]
        insert = f" {lead} {pre}{value}{post}"
        start = at + len(lead) + 2 + len(pre)
    new = text[:at] + insert + text[at:]
    assert new[start : start + len(value)] == value
    return Planted(kind, form, lang, source.source, new, start + part, start + part_end, cjk)


# --- report -------------------------------------------------------------------------------------------------------


def around(text: str, start: int, end: int, width: int = 45) -> str:
    snippet = text[max(0, start - width) : start] + "[[" + text[start:end] + "]]" + text[end : end + width]
    return snippet.replace("\n", " ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-kind", type=int, default=300, help="texts given a planted value, per kind")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--examples", type=int, default=10, help="false positives and misses shown")
    args = parser.parse_args()
    require_data()
    rng = np.random.default_rng(args.seed)
    values = Values(rng)

    oasst, hh = load_texts()
    pools = {"oasst": list(rng.permutation(len(oasst))), "hh": list(rng.permutation(len(hh)))}
    texts_of = {"oasst": oasst, "hh": hh}
    used: dict[str, set[int]] = {"oasst": set(), "hh": set()}
    turn = {"oasst": 0, "hh": 0}
    planted: list[Planted] = []
    sources: list[Text] = []
    for kind in pii.KINDS:
        for n in range(args.per_kind):
            src = "oasst" if n % 2 == 0 else "hh"
            index = int(pools[src][turn[src] % len(pools[src])])
            turn[src] += 1
            used[src].add(index)
            form, value = values.draw(kind)
            planted.append(plant(texts_of[src][index], kind, form, value, rng))
            sources.append(texts_of[src][index])
    untouched = [t for src in ("oasst", "hh") for i, t in enumerate(texts_of[src]) if i not in used[src]]
    langs = Counter(p.lang for p in planted)
    print(
        f"texts: {len(oasst):,} OASST messages, {len(hh):,} distinct HH turns; {len(planted):,} planted"
        f" ({args.per_kind} per kind, {sum(p.cjk for p in planted)} of them in zh/ja without spaces), in"
        f" {len(langs)} languages ({', '.join(f'{k} {v}' for k, v in langs.most_common(8))}, ...);"
        f" {len(untouched):,} untouched texts"
    )

    t0 = time.perf_counter()
    planted_finds = [pii.find(p.text) for p in planted]
    untouched_finds = [pii.find(t.text) for t in untouched]
    seconds = time.perf_counter() - t0
    n_chars = sum(len(p.text) for p in planted) + sum(len(t.text) for t in untouched)
    print(
        f"pii.find on {len(planted) + len(untouched):,} texts ({n_chars / 1e6:.1f} M characters): {seconds:.2f}s,"
        f" {(len(planted) + len(untouched)) / seconds:,.0f} texts/s"
    )

    # --- score
    found = np.zeros(len(planted), dtype=bool)
    exact = np.zeros(len(planted), dtype=bool)
    other_kind: list[set[str]] = [set() for _ in planted]
    finds_of: Counter = Counter()  # every find, by kind
    true_finds: Counter = Counter()  # finds of the kind on a planted span of the kind
    on_other: Counter = Counter()  # finds of the kind on a planted span of another kind
    false: list[tuple[str, str, str, Text]] = []  # (kind, where, snippet, source)
    for k, (p, finds) in enumerate(zip(planted, planted_finds, strict=True)):
        original = {(f.kind, f.text) for f in pii.find(sources[k].text)}
        for f in finds:
            finds_of[f.kind] += 1
            if f.start < p.end and p.start < f.end:
                if f.kind == p.kind:
                    true_finds[f.kind] += 1
                    found[k] = True
                    exact[k] |= (f.start, f.end) == (p.start, p.end)
                else:
                    on_other[f.kind] += 1
                    other_kind[k].add(f.kind)
            else:
                where = "planted text, in the source too" if (f.kind, f.text) in original else "planted text, new"
                false.append((f.kind, where, around(p.text, f.start, f.end), sources[k]))
    for t, finds in zip(untouched, untouched_finds, strict=True):
        for f in finds:
            finds_of[f.kind] += 1
            false.append((f.kind, "untouched text", around(t.text, f.start, f.end), t))
    false_by_kind = Counter(kind for kind, *_ in false)

    print(
        f"\n{'kind':<7}{'planted':>8}{'found':>7}{'recall':>8}{'exact span':>11}{'as other kind':>14}"
        f"{'finds':>7}{'false pos.':>11}{'on other kind':>14}{'precision':>10}"
    )
    kinds = np.array([p.kind for p in planted])
    for kind in pii.KINDS:
        mask = kinds == kind
        as_other = sum(1 for k in np.flatnonzero(mask) if not found[k] and other_kind[k])
        precision = true_finds[kind] / finds_of[kind] if finds_of[kind] else float("nan")
        print(
            f"{kind:<7}{mask.sum():>8}{found[mask].sum():>7}{found[mask].mean():>8.1%}{exact[mask].sum():>11}"
            f"{as_other:>14}{finds_of[kind]:>7}{false_by_kind[kind]:>11}{on_other[kind]:>14}{precision:>10.1%}"
        )
    print(
        f"{'all':<7}{len(planted):>8}{found.sum():>7}{found.mean():>8.1%}{exact.sum():>11}"
        f"{'':>14}{sum(finds_of.values()):>7}{len(false):>11}{sum(on_other.values()):>14}"
        f"{sum(true_finds.values()) / max(1, sum(finds_of.values())):>10.1%}"
    )
    cjk = np.array([p.cjk for p in planted])
    print(
        f"recall in zh/ja texts (no spaces): {found[cjk].mean():.1%} of {cjk.sum()};"
        f" elsewhere {found[~cjk].mean():.1%} of {(~cjk).sum()}"
    )
    print(
        "  zh/ja by kind (found / planted): "
        + ", ".join(
            f"{kind} {found[(kinds == kind) & cjk].sum()}/{((kinds == kind) & cjk).sum()}" for kind in pii.KINDS
        )
    )

    # --- by format: where recall or the span is not complete, with the first such value and what was found there
    def got(k: int) -> str:
        p = planted[k]
        near = [f"{f.kind} {f.text!r}" for f in planted_finds[k] if f.start < p.end + 3 and p.start - 3 < f.end]
        return ", ".join(near) or "nothing"

    by_form: dict[tuple[str, str], list[int]] = defaultdict(list)
    for k, p in enumerate(planted):
        by_form[(p.kind, p.form)].append(k)
    print("\nformats not always found whole (found / exact span / planted; e.g. the first value not found whole):")
    complete = 0
    for (kind, form), ks in sorted(by_form.items(), key=lambda item: (pii.KINDS.index(item[0][0]), item[0][1])):
        hits, whole = int(found[ks].sum()), int(exact[ks].sum())
        if whole == len(ks):
            complete += 1
            continue
        k = next(k for k in ks if not exact[k])
        example = f"{planted[k].text[planted[k].start : planted[k].end]!r}{' (zh/ja)' if planted[k].cjk else ''}"
        print(f"  {kind:<6}{form:<30}{hits:>4} /{whole:>4} /{len(ks):>4}   e.g. {example} -> {got(k)}")
    print(f"  ({complete} other formats: every value found, with its exact span)")

    # Misses in zh/ja of formats found elsewhere: the text around the value is the cause.
    elsewhere = {(p.kind, p.form) for k, p in enumerate(planted) if found[k] and not p.cjk}
    cjk_missed = [k for k, p in enumerate(planted) if p.cjk and not found[k] and (p.kind, p.form) in elsewhere]
    print(f"\nmissed in zh/ja texts although the format is found elsewhere: {len(cjk_missed)}")
    for k in cjk_missed[: args.examples]:
        p = planted[k]
        print(f"  {p.kind:<6}{around(p.text, p.start, p.end, 20)!r} -> {got(k)}")

    # --- false positives
    origin = Counter((kind, where) for kind, where, *_ in false)
    print(f"\nfalse positives (finds on no planted span): {len(false)}")
    for (kind, where), n in sorted(origin.items()):
        print(f"  {kind:<6}{where:<34}{n:>5}")
    # Up to EXAMPLES, a round over the kinds so that every kind shows.
    by_kind: dict[str, list] = defaultdict(list)
    for item in false:
        by_kind[item[0]].append(item)
    shown, depth = [], 0
    while len(shown) < min(args.examples, len(false)):
        for kind in pii.KINDS:
            if depth < len(by_kind[kind]) and len(shown) < args.examples:
                shown.append(by_kind[kind][depth])
        depth += 1
    for kind, where, snippet, src in shown:
        print(f"  {kind:<6}({where}, {src.source} {src.lang}) {snippet!r}")

    # --- OASST volunteers' pii label
    labelled = [t for t in oasst if t.pii_label is not None]
    confusion = Counter((t.pii_label > 0, bool(pii.find(t.text))) for t in labelled)
    print(
        f"\nOASST volunteers' pii label (value > 0) vs pii.find finding anything, {len(labelled):,} labelled messages:"
    )
    print(f"{'':<18}{'found':>8}{'not found':>11}")
    for label in (True, False):
        print(f"{'label > 0' if label else 'label 0':<18}{confusion[(label, True)]:>8}{confusion[(label, False)]:>11}")


if __name__ == "__main__":
    main()
