"""Accept-header negotiation and multipart/related bodies (PS3.18 §8.7, §8.6)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from django.http import HttpResponse, StreamingHttpResponse

# Image media types of the compressed transfer syntaxes (PS3.18 Table 8.7.3-4).
MEDIA_TYPE_OF_SYNTAX = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
EXPLICIT_LE = "1.2.840.10008.1.2.1"
NATIVE_LE = {"1.2.840.10008.1.2", EXPLICIT_LE}


@dataclass
class MediaRange:
    mime: str  # "multipart/related", "*/*", "image/png" ...
    params: dict[str, str] = field(default_factory=dict)

    @property
    def part_type(self) -> str | None:
        """The ``type`` parameter of a multipart/related range."""
        return self.params.get("type")

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges in the order the client gave them (q-values are ignored)."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = []
    for raw in _split_outside_quotes(header, ","):
        pieces = _split_outside_quotes(raw, ";")
        mime = pieces[0].strip().lower()
        if not mime:
            continue
        params = {}
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        ranges.append(MediaRange(mime, params))
    return ranges or [MediaRange("*/*")]


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    out.append("".join(current))
    return out


def new_boundary() -> str:
    return uuid.uuid4().hex


def multipart_bytes(parts: Iterable[tuple[str, bytes]], part_type: str) -> HttpResponse:
    """A small multipart/related body built in memory (frames, bulk data). CRLF everywhere."""
    boundary = new_boundary()
    chunks = []
    for content_type, data in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode())
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return HttpResponse(
        b"".join(chunks), content_type=f'multipart/related; type="{part_type}"; boundary={boundary}'
    )


def multipart_stream(parts: Iterable[tuple[str, Iterator[bytes]]], part_type: str) -> StreamingHttpResponse:
    """A multipart/related body streamed part by part (whole DICOM files)."""
    boundary = new_boundary()

    def body():
        for content_type, data in parts:
            yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
            yield from data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return StreamingHttpResponse(
        body(), content_type=f'multipart/related; type="{part_type}"; boundary={boundary}'
    )
