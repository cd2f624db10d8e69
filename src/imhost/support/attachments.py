"""Ticket attachments: what is accepted (by content, never by the name or the declared type),
and where files live (the data dir, under random names).

Accepted: images (PNG, JPEG, GIF, WebP), PDF, plain text (UTF-8, not HTML, SVG or a
script) and zip archives. Everything else is refused, executables, HTML and SVG in
particular: a file served back must never run in a browser or on a desktop. Downloads are
always ``application/octet-stream`` with ``Content-Disposition: attachment`` and
``X-Content-Type-Options: nosniff`` (the web layer sets them).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from imhost.kit.errors import InvalidInput

DOWNLOAD_CONTENT_TYPE = "application/octet-stream"

_EXECUTABLE_MAGIC: tuple[bytes, ...] = (
    b"MZ",  # Windows PE
    b"\x7fELF",  # Linux ELF
    b"\xca\xfe\xba\xbe",  # Mach-O universal / Java class
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"#!",  # scripts
)
_MARKUP = re.compile(
    rb"<\s*(!doctype|html|head|body|script|svg|iframe|object|embed|meta|\?xml)", re.IGNORECASE
)


@dataclass(frozen=True)
class AttachmentIn:
    """A file a person (or an e-mail) sent: its name as given and its bytes."""

    filename: str
    content: bytes


def sniff_kind(content: bytes) -> str | None:
    """The kind of file ``content`` is, by its first bytes: image, pdf, zip or text; None
    when it is none of those (or is one of the refused kinds)."""
    head = content[:16]
    if any(head.startswith(magic) for magic in _EXECUTABLE_MAGIC):
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return "image"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image"
    if head[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    return "text" if _is_plain_text(content) else None


def _is_plain_text(content: bytes) -> bool:
    if b"\x00" in content:
        return False
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    # Browsers sniff markup in the first bytes; refuse it anywhere in the first 4 KiB.
    return _MARKUP.search(content[:4096]) is None


def clean_filename(name: str) -> str:
    """A file name safe to show and to put in a header: the last path part, printable
    characters only, at most 120 characters; ``attachment`` when nothing is left."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    kept = "".join(ch for ch in name if unicodedata.category(ch)[0] not in ("C", "Z") or ch == " ")
    kept = kept.replace('"', "'").strip(" .")
    if len(kept) > 120:
        stem, dot, ext = kept.rpartition(".")
        kept = (stem[: 119 - len(ext)] + dot + ext) if dot and len(ext) <= 10 else kept[:120]
    return kept or "attachment"


@dataclass(frozen=True)
class CheckedAttachment:
    filename: str
    kind: str
    content: bytes
    sha256: str


def check(files: list[AttachmentIn], *, max_bytes: int, max_count: int) -> list[CheckedAttachment]:
    """Refuse too many files, a file too large or of a refused kind, with a plain message."""
    files = [f for f in files if f.content or f.filename]
    if len(files) > max_count:
        raise InvalidInput(f"Attach at most {max_count} files to one message.", field="attachments")
    out: list[CheckedAttachment] = []
    for item in files:
        name = clean_filename(item.filename)
        if not item.content:
            raise InvalidInput(f"The file {name} is empty.", field="attachments")
        if len(item.content) > max_bytes:
            limit = (
                f"{max_bytes / (1024 * 1024):.0f} MB"
                if max_bytes >= 1024 * 1024
                else (f"{max_bytes // 1024} KB")
            )
            raise InvalidInput(f"The file {name} is larger than {limit}.", field="attachments")
        kind = sniff_kind(item.content)
        if kind is None:
            raise InvalidInput(
                f"The file {name} is not a picture, PDF, text or zip file; those are the "
                "kinds we accept.",
                field="attachments",
            )
        out.append(
            CheckedAttachment(
                filename=name,
                kind=kind,
                content=item.content,
                sha256=hashlib.sha256(item.content).hexdigest(),
            )
        )
    return out


class AttachmentStore:
    """Files under ``root`` named by 32 random hex characters (the name reveals nothing)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, content: bytes) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        name = secrets.token_hex(16)
        path = self.root / name
        tmp = self.root / f".{name}.tmp"
        tmp.write_bytes(content)
        tmp.replace(path)
        return name

    def path(self, storage_name: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{32}", storage_name):
            raise InvalidInput("There is no such file.")
        return self.root / storage_name

    def read(self, storage_name: str) -> bytes:
        return self.path(storage_name).read_bytes()
