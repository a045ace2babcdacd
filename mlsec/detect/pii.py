"""Find personal data in text: e-mail addresses, card numbers, US SSNs, IBANs, IPs, phone numbers.

Regular expressions find candidates; a validator for each kind then throws most of them away,
because a dataset scanner that cries wolf on every order number is switched off. What "valid"
means here:

* **email** -- a local part, ``@``, dotted domain labels and an alphabetic TLD that is not a file
  extension (``icon@2x.png`` is an image name, not an address);
* **credit_card** -- 13 to 19 digits, optionally in the printed groups (4-4-4-4, 4-6-5, ...),
  an issuer prefix that exists (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay,
  Maestro) and a correct **Luhn** check digit;
* **us_ssn** -- ``AAA-GG-SSSS`` with dashes or spaces (a bare 9-digit run is any number), never
  area 000, 666 or 900-999, group 00 or serial 0000, nor the two numbers the SSA voided after
  they were printed on sample cards;
* **iban** -- a country code with its registered IBAN length and a correct **mod-97** checksum;
* **ip_address** -- IPv4/IPv6 accepted by :mod:`ipaddress` and *globally routable*: private,
  loopback and documentation ranges are not personal data; four single-digit parts
  (``1.2.3.4``) read as a version number;
* **phone** -- international ``+CC ...`` numbers with a known country calling code and 8-15
  digits (E.164), or North American ``(AAA) EEE-NNNN`` / ``AAA-EEE-NNNN`` with valid area and
  exchange codes. Bare digit runs are never phones: they are IDs, timestamps and amounts.

A hit carries its kind, its span in the text and a **masked** form only (first 2-4 characters
and the length), so nothing built on it -- findings, caches, reports -- can leak the value.
Overlapping candidates keep the most specific kind (an IBAN's digits are not also a phone).
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from dataclasses import dataclass

__all__ = ["KINDS", "PiiHit", "find_pii", "iban_ok", "luhn_ok", "mask", "ssn_ok"]

# Stable kind names (also the order in which overlaps are resolved: earlier wins).
KINDS = ("email", "iban", "credit_card", "us_ssn", "ip_address", "phone")


@dataclass(frozen=True, slots=True)
class PiiHit:
    """One piece of personal data in a text: its kind, its span and a masked form of it."""

    kind: str
    start: int
    end: int
    masked: str


def mask(value: str) -> str:
    """First 2-4 characters (fewer for short values), an ellipsis and the length."""
    n = len(value)
    keep = 2 if n < 12 else 3 if n < 16 else 4
    return f"{value[:keep]}…({n} chars)"


# --- validators ---------------------------------------------------------------------------

def luhn_ok(digits: str) -> bool:
    """Luhn (mod 10) check over a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_brand_ok(digits: str) -> bool:
    """Is there an issuer with this prefix and length (a bare Luhn passes one number in ten)?"""
    n = len(digits)
    p2, p4 = int(digits[:2]), int(digits[:4])
    p3, p6 = int(digits[:3]), int(digits[:6])
    if digits[0] == "4":                                   # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:               # Mastercard
        return n == 16
    if p2 in (34, 37):                                     # American Express
        return n == 15
    if p4 == 6011 or p2 == 65 or 644 <= p3 <= 649 or 622126 <= p6 <= 622925:  # Discover
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:                                 # JCB
        return 16 <= n <= 19
    if 300 <= p3 <= 305 or p2 in (36, 38, 39) or p4 == 3095:  # Diners Club
        return 14 <= n <= 19
    if p2 == 62:                                           # UnionPay
        return 16 <= n <= 19
    if p2 in (50, 56, 57, 58, 63, 67) or p4 in (6304, 6759, 6761, 6762, 6763):  # Maestro
        return 12 <= n <= 19
    return False


# Printed group layouts of card numbers (digits per group).
_CARD_GROUPS = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4), (4, 4, 4, 1), (4, 4, 4, 2),
                          (4, 4, 4, 4, 1), (4, 4, 4, 4, 2), (4, 4, 5), (4, 4, 4, 3)})


def _card_ok(candidate: str) -> bool:
    digits = re.sub(r"[ -]", "", candidate)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    seps = set(re.findall(r"[ -]", candidate))
    if len(seps) > 1:
        return False
    if seps:
        groups = tuple(len(g) for g in re.split(r"[ -]", candidate))
        if groups not in _CARD_GROUPS:
            return False
    return _card_brand_ok(digits) and luhn_ok(digits)


# Numbers the SSA voided after they appeared in advertising (Woolworth wallet card, etc.).
_VOID_SSNS = frozenset({"078051120", "219099999"})


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """US SSN structure: area not 000/666/9xx, group not 00, serial not 0000, not voided."""
    a = int(area)
    if a == 0 or a == 666 or a >= 900 or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _VOID_SSNS


# Registered IBAN lengths (SWIFT IBAN registry).
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def iban_ok(compact: str) -> bool:
    """Country length and ISO 7064 mod-97 check of an IBAN without spaces."""
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


# ITU-T E.164 country calling codes in use (1-3 digits).
_CALLING_CODES_TEXT = (
    "1 7 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 63 64 65 66 "
    "81 82 84 86 90 91 92 93 94 95 98 211 212 213 216 218 220 221 222 223 224 225 226 227 228 229 230 231 232 "
    "233 234 235 236 237 238 239 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255 256 257 258 "
    "260 261 262 263 264 265 266 267 268 269 290 291 297 298 299 350 351 352 353 354 355 356 357 358 359 370 "
    "371 372 373 374 375 376 377 378 379 380 381 382 383 385 386 387 389 420 421 423 500 501 502 503 504 505 "
    "506 507 508 509 590 591 592 593 594 595 596 597 598 599 670 672 673 674 675 676 677 678 679 680 681 682 "
    "683 685 686 687 688 689 690 691 692 850 852 853 855 856 870 880 886 960 961 962 963 964 965 966 967 968 "
    "970 971 972 973 974 975 976 977 992 993 994 995 996 998"
)
_CALLING_CODES = frozenset(_CALLING_CODES_TEXT.split())


def _nanp_ok(area: str, exchange: str) -> bool:
    """North American numbering plan: NXX area and exchange codes, no N11 service codes."""
    return (area[0] not in "01" and area[1:] != "11" and exchange[0] not in "01" and exchange[1:] != "11")


def _intl_phone_ok(candidate: str) -> bool:
    if candidate.count("(") != candidate.count(")") or re.search(r"[ .-]{2}|\(\)", candidate):
        return False
    digits = re.sub(r"\D", "", candidate)
    if not 8 <= len(digits) <= 15 or len(set(digits)) <= 2:
        return False
    if digits[0] == "1":
        return len(digits) == 11 and _nanp_ok(digits[1:4], digits[4:7])
    # The country code sits inside the first group: "+3 2023-10-12" is not Belgium's +32.
    first = len(re.match(r"\+(\d*)", candidate).group(1))  # type: ignore[union-attr]
    return any(digits[:k] in _CALLING_CODES for k in (1, 2, 3) if k <= first)


# Ranges that are not personal: private, shared, loopback, link-local, documentation,
# benchmarking, multicast and reserved space (RFC 6890). (first, last) as integers.
_IPV4_NOT_GLOBAL = tuple(
    (int(net.network_address), int(net.broadcast_address))
    for net in map(ipaddress.IPv4Network, (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3"))
)


def _ipv4_global(dotted: str) -> bool:
    """Publicly routable IPv4 address (no leading zeros, each part 0-255)?"""
    value = 0
    for part in dotted.split("."):
        if len(part) > 1 and part[0] == "0":
            return False  # ambiguous octal-looking form; ipaddress rejects it too
        octet = int(part)
        if octet > 255:
            return False
        value = value << 8 | octet
    return not any(lo <= value <= hi for lo, hi in _IPV4_NOT_GLOBAL)


_NON_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "js", "mjs", "css", "ts", "tsx",
                       "jsx", "map", "json", "xml", "txt", "yaml", "yml", "toml", "lock", "html", "htm", "md"})

# --- patterns -----------------------------------------------------------------------------
#
# Speed: Python's ``re`` skips quickly to a pattern's first character only when the pattern
# starts with a literal or a character class (a leading look-behind defeats that). So each kind
# is found from a cheap anchor -- ``@`` for e-mails, a cluster of digits for the numeric kinds,
# ``2``/``3`` for global IPv6 -- and the precise pattern, with its look-arounds, then runs only on
# that small neighbourhood. Clean prose scans at tens of MB/s instead of a few.

_AT = re.compile("@")
_DIGIT = re.compile(r"\d")
_EMAIL = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}([A-Za-z]{2,24}))(?![\w-]|\.[A-Za-z0-9])"
)
_LOCAL_BEFORE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.%+-")

# Eight or more characters of digits and the separators numbers are printed with (the shortest
# reported value, a global IPv4 address that is not all single digits, has eight).
_CLUSTER = re.compile(r"\d[\d.() -]{6,}\d")
_IBAN_START = re.compile(r"[A-Z]{2}\d\d")
_UPPER = re.compile(r"[A-Z]")
_IPV6_START = re.compile(r"[23][0-9A-Fa-f]{3}:")
_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){11,18}(?![\w-]|\.\d)")
_SSN = re.compile(r"(?<![\w.-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-]|\.\d)")
_IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)(?![A-Za-z0-9])")
_IPV4 = re.compile(r"(?<![\w.-])((?:\d{1,3}\.){3}\d{1,3})(?![\w-]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])([23][0-9A-Fa-f]{3}:[0-9A-Fa-f:]{2,35})(?![\w:.])")
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d(?:[ .-]?\(?\d++\)?){1,7}(?![\w+-])")
_PHONE_NANP = re.compile(
    r"(?<![\w+().-])(?:1[ .-])?(?:\((\d{3})\) ?|(\d{3})([.-]))(\d{3})[.-](\d{4})(?![\w-]|\.\d)"
)


def _emails(text: str, out: list[tuple[str, int, int]]) -> None:
    n = len(text)
    last_end = 0
    for at in _AT.finditer(text):
        i = at.start()
        if i < last_end:
            continue
        lo, hi = max(last_end, i - 64), min(n, i + 300)
        m = _EMAIL.search(text, lo, hi)
        while m is not None and m.end() <= i:
            m = _EMAIL.search(text, m.end(), hi)
        if m is None or m.start() > i:
            continue
        start, end = m.span()
        if (start and text[start - 1] in _LOCAL_BEFORE) or (end == hi and hi < n):
            continue  # the local part or the domain runs past the window: too long to be real
        if m.group(2).lower() in _NON_TLDS or ".." in text[start:i]:
            continue
        out.append(("email", start, end))
        last_end = end


def _iban_at(text: str, start: int, out: list[tuple[str, int, int]]) -> None:
    m = _IBAN.match(text, start)
    if m is None:
        return
    compact = m.group(1).replace(" ", "")
    want = _IBAN_LENGTHS.get(compact[:2])
    if want is None or len(compact) < want:
        return
    end = m.end()
    if len(compact) > want:  # the next word's first group was swallowed: cut at the length
        keep, end = 0, m.start()
        while keep < want:
            if text[end] != " ":
                keep += 1
            end += 1
        compact = compact[:want]
        if end < m.end() and text[end] != " ":
            return  # the length falls inside a group: not a printed IBAN
    if iban_ok(compact):
        out.append(("iban", m.start(), end))


def _numbers(text: str, out: list[tuple[str, int, int]]) -> None:
    """Card numbers, SSNs, IPv4 addresses and phone numbers, from clusters of digits."""
    n = len(text)
    for c in _CLUSTER.finditer(text):
        g = c.group()
        cs, ce = c.span()
        lead = text[cs - 1] if cs else ""
        if cs >= 2 and _UPPER.search(text, max(0, cs - 3), cs):
            _iban_near(text, cs, out)
        if len(g) <= 10 and lead != "+" and "." not in g:
            continue  # dates, times, short ids: cards need 12 digits, SSNs and phones 11 characters
        dots = g.count(".")
        ndig = len(g) - dots - g.count(" ") - g.count("-") - g.count("(") - g.count(")")
        if ndig < 9 and dots < 3 and not (lead == "+" and ndig >= 7):
            continue  # too few digits for any kind (dates, amounts, times)
        if lead in ("+", "("):
            cs -= 1
        hi = min(n, ce + 2)  # look-aheads must see the characters after the cluster
        if ndig >= 12:
            for m in _CARD.finditer(text, cs, hi):
                if _card_ok(m.group(0)):
                    out.append(("credit_card", m.start(), m.end()))
        if ndig >= 9:
            for m in _SSN.finditer(text, cs, hi):
                if ssn_ok(m.group(1), m.group(3), m.group(4)):
                    out.append(("us_ssn", m.start(), m.end()))
        if dots >= 3:
            for m in _IPV4.finditer(text, cs, hi):
                if all(len(p) == 1 for p in m.group(1).split(".")):
                    continue  # 1.2.3.4 reads as a version number
                if _ipv4_global(m.group(1)):
                    out.append(("ip_address", m.start(), m.end()))
        if lead == "+":
            for m in _PHONE_INTL.finditer(text, cs, hi):
                if _intl_phone_ok(m.group(0)):
                    out.append(("phone", m.start(), m.end()))
        if ndig < 10:
            continue
        for m in _PHONE_NANP.finditer(text, cs, hi):
            area = m.group(1) or m.group(2)
            if _nanp_ok(area, m.group(4)) and (m.group(1) or text[m.end() - 5] == m.group(3)):
                out.append(("phone", m.start(), m.end()))


def _iban_near(text: str, cs: int, out: list[tuple[str, int, int]]) -> None:
    """An IBAN whose digits start the cluster at ``cs`` begins up to 12 characters before it.

    IBANs open with two letters and two check digits; letters of the bank code may follow
    (``GB82WEST1234...``), so the digit cluster can start a few characters later.
    """
    for m in _IBAN_START.finditer(text, max(0, cs - 18), cs + 2):
        _iban_at(text, m.start(), out)


def _ipv6(text: str, out: list[tuple[str, int, int]]) -> None:
    for start in _IPV6_START.finditer(text):
        m = _IPV6.match(text, start.start())
        if m is None:
            continue
        cand = m.group(1)
        if cand.count(":") < 2:
            continue
        try:
            addr = ipaddress.IPv6Address(cand)
        except ValueError:
            continue
        # Only allocated global unicast space (2000::/3): "a::b" in code is not an address.
        if addr.is_global and (int(addr) >> 125) == 1:
            out.append(("ip_address", m.start(), m.end()))


_RANK = {kind: i for i, kind in enumerate(KINDS)}


def find_pii(text: str) -> list[PiiHit]:
    """All personal data in ``text``, sorted by position; overlaps keep the most specific kind."""
    if not text:
        return []
    spans: list[tuple[str, int, int]] = []
    _emails(text, spans)
    if _DIGIT.search(text):
        _numbers(text, spans)
        _ipv6(text, spans)
    if not spans:
        return []
    spans.sort(key=lambda s: (_RANK[s[0]], s[1]))
    starts: list[int] = []  # accepted spans, disjoint, sorted by start
    ends: list[int] = []
    hits: list[PiiHit] = []
    for kind, start, end in spans:
        i = bisect.bisect_right(starts, start)
        if (i and ends[i - 1] > start) or (i < len(starts) and starts[i] < end):
            continue
        starts.insert(i, start)
        ends.insert(i, end)
        hits.append(PiiHit(kind=kind, start=start, end=end, masked=mask(text[start:end])))
    hits.sort(key=lambda h: (h.start, h.end, h.kind))
    return hits
