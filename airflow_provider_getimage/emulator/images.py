"""Deterministic PNG pictures drawn from a prompt, with the standard library only.

The emulator must serve real images (clients download and save them) without a Pillow
dependency at runtime; and a test must be able to tell two prompts apart by their pixels.
Each picture is a two-colour gradient plus a few shapes, all derived from
``sha256(prompt, index)``, so the same prompt and index always give the same bytes.
Rows are built with ``bytearray`` slice assignment, not per-pixel calls, to stay fast.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import math
import random
import struct
import zlib

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    """Frame one PNG chunk: length, tag, data and the CRC readers check."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _colour(rng: random.Random, hue: float | None = None) -> bytes:
    """A saturated, fairly bright colour, so pictures of different prompts are easy to tell apart."""
    h = rng.random() if hue is None else hue % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.45 + 0.5 * rng.random(), 0.55 + 0.45 * rng.random())
    return bytes((round(r * 255), round(g * 255), round(b * 255)))


def _gradient_strip(start: bytes, end: bytes, length: int) -> bytearray:
    """``length`` RGB pixels fading from ``start`` to ``end``."""
    strip = bytearray(3 * length)
    last = max(length - 1, 1)
    for i in range(length):
        t = i / last
        strip[3 * i : 3 * i + 3] = bytes(round(a + (b - a) * t) for a, b in zip(start, end, strict=True))
    return strip


def _background(rng: random.Random, size: int) -> list[bytearray]:
    """Gradient rows in one of four directions."""
    start = _colour(rng)
    start_hue = colorsys.rgb_to_hsv(*(c / 255 for c in start))[0]
    end = _colour(rng, hue=start_hue + 0.25 + 0.25 * rng.random())  # a distinct hue, never a flat fill
    direction = rng.randrange(4)
    if direction == 0:  # top to bottom: each row is one colour
        strip = _gradient_strip(start, end, size)
        return [bytearray(strip[3 * y : 3 * y + 3] * size) for y in range(size)]
    if direction == 1:  # left to right: every row is the same
        strip = _gradient_strip(start, end, size)
        return [bytearray(strip) for _ in range(size)]
    strip = _gradient_strip(start, end, 2 * size - 1)
    if direction == 2:  # diagonal, top-left to bottom-right
        return [bytearray(strip[3 * y : 3 * (y + size)]) for y in range(size)]
    # anti-diagonal, bottom-left to top-right
    return [bytearray(strip[3 * (size - 1 - y) : 3 * (2 * size - 1 - y)]) for y in range(size)]


def _fill_span(row: bytearray, x0: int, x1: int, colour: bytes, size: int) -> None:
    """Paint pixels ``x0 <= x < x1`` of a row, clipped to the picture."""
    x0, x1 = max(x0, 0), min(x1, size)
    if x1 > x0:
        row[3 * x0 : 3 * x1] = colour * (x1 - x0)


def _rect(rows: list[bytearray], x0: int, y0: int, w: int, h: int, colour: bytes, size: int) -> None:
    """Paint an axis-aligned rectangle."""
    for y in range(max(y0, 0), min(y0 + h, size)):
        _fill_span(rows[y], x0, x0 + w, colour, size)


def _disc(rows: list[bytearray], cx: int, cy: int, r: int, colour: bytes, size: int) -> None:
    """Paint a filled circle, one span per row."""
    for y in range(max(cy - r, 0), min(cy + r + 1, size)):
        half = math.isqrt(max(r * r - (y - cy) ** 2, 0))
        _fill_span(rows[y], cx - half, cx + half + 1, colour, size)


def _shapes(rng: random.Random, rows: list[bytearray], size: int) -> None:
    """Scatter 3-6 derived shapes (discs, rings, rectangles, stripes) over the background."""
    for _ in range(3 + rng.randrange(4)):
        colour = _colour(rng)
        kind = rng.randrange(4)
        if kind == 0:  # disc
            r = rng.randint(size // 16, size // 4)
            _disc(rows, rng.randrange(size), rng.randrange(size), r, colour, size)
        elif kind == 1:  # ring
            r = rng.randint(size // 10, size // 3)
            cx, cy = rng.randrange(size), rng.randrange(size)
            _disc(rows, cx, cy, r, colour, size)
            _disc(rows, cx, cy, r * 2 // 3, _colour(rng), size)
        elif kind == 2:  # rectangle
            w, h = rng.randint(size // 10, size // 2), rng.randint(size // 10, size // 2)
            _rect(rows, rng.randrange(-w // 2, size), rng.randrange(-h // 2, size), w, h, colour, size)
        else:  # stripes, horizontal or vertical
            width = max(size // 32, 1) * rng.randint(1, 3)
            period = width * rng.randint(2, 4)
            start, stop = sorted((rng.randrange(size), rng.randrange(size)))
            horizontal = rng.random() < 0.5
            for offset in range(start, max(stop, start + period), period):
                if horizontal:
                    _rect(rows, 0, offset, size, width, colour, size)
                else:
                    _rect(rows, offset, 0, width, size, colour, size)


@functools.lru_cache(maxsize=256)
def render_png(prompt: str, index: int, size: int = 256) -> bytes:
    """Draw picture ``index`` of a diffusion of ``prompt`` as a ``size`` x ``size`` RGB PNG.

    Cached: a client polling and downloading repeatedly costs one rendering per image.

    :param prompt: the diffusion prompt; different prompts give visibly different pictures.
    :param index: the picture's position in the diffusion's ``images`` list.
    :param size: width and height in pixels.
    """
    digest = hashlib.sha256(f"{prompt}\x00{index}".encode()).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    rows = _background(rng, size)
    _shapes(rng, rows, size)
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 (None) on every row
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    description = b"Description\x00\x00\x00\x00\x00" + prompt[:200].encode()  # iTXt, UTF-8
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"iTXt", description),
            _chunk(b"IDAT", zlib.compress(raw, 6)),
            _chunk(b"IEND", b""),
        )
    )
