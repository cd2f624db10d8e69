"""Regenerate ``common-passwords.txt.gz``, the list of common and breached passwords.

Run from the repository root::

    python3 src/imhost/accounts/data/build_common_passwords.py

Source: the ``passwords`` frequency list shipped inside the zxcvbn package (MIT licence),
which zxcvbn's authors built from leaked-password corpora, most common first. We keep the top
``LIMIT`` entries, lower-cased and NFKC-normalised exactly as ``passwords.check_password``
compares them, one per line, in rank order. The output is gzip-compressed with a fixed mtime
so that rebuilding it from the same zxcvbn version gives the same bytes.

NIST SP 800-63B §5.1.1.2 asks verifiers to compare new passwords against "passwords obtained
from previous breach corpuses" and "dictionary words"; this list is the offline, shipped part of
that check (zxcvbn's dictionaries cover the rest through the strength estimate).
"""

from __future__ import annotations

import gzip
import sys
import unicodedata
from pathlib import Path

LIMIT = 30_000
OUTPUT = Path(__file__).with_name("common-passwords.txt.gz")


def collect(limit: int = LIMIT) -> list[str]:
    """The ``limit`` most common passwords known to zxcvbn, normalised, without duplicates."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    raw = FREQUENCY_LISTS["passwords"]
    words: list[str] = raw.split(",") if isinstance(raw, str) else list(raw)
    seen: set[str] = set()
    out: list[str] = []
    for word in words:
        entry = unicodedata.normalize("NFKC", word).strip().casefold()
        if entry and "\n" not in entry and entry not in seen:
            seen.add(entry)
            out.append(entry)
        if len(out) >= limit:
            break
    return out


def write(entries: list[str], path: Path = OUTPUT) -> None:
    data = ("\n".join(entries) + "\n").encode("utf-8")
    with (
        path.open("wb") as raw,
        gzip.GzipFile(
            filename="common-passwords.txt", mode="wb", fileobj=raw, mtime=0, compresslevel=9
        ) as gz,
    ):
        gz.write(data)


def main() -> int:
    entries = collect()
    write(entries)
    print(f"wrote {len(entries)} passwords to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
