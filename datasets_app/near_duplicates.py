"""Perceptual signatures of images, and the rule that calls two images near-duplicates.

Django-free (Pillow + stdlib) like validation.py. A signature has two parts, and both must agree:

* an edge map: where a 25×25 greyscale copy gets brighter or darker from one cell to the next,
  across and down, at two strengths (strong; weak = at least half as strong). Only edges are
  compared: a 64-bit dHash, whose bits say "brighter than the right neighbour", is all zeros
  wherever a picture is flat, so any two flat drawings looked alike (9 of the 12 demo shapes were
  flagged). Two edge maps agree when few strong edges of either have no edge of the same sign within
  one cell in the other; that slack absorbs resizing, re-encoding and crops of up to ~5%. At most
  10% of the steps count as strong and 30% as edges at all, so a picture that is texture
  everywhere (a lawn) does not have an edge next to every cell and match any other texture.
* a colour layout: the mean colour of 6×6 cells in YCbCr. It tells the same shape in other colours
  apart, which has the same edges. Two layouts agree when few cells differ by much in any channel.

Tuned and measured on the generated labelled set in tests/datasets/near_duplicate_set.py
(benchmarks/near_duplicates.py prints the figures; docs/datasets.md records them).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from PIL import Image, ImageChops

PREFIX = "v2:"  # older values (16 hex digits of a dHash) parse as None and take no part
_SIDE = 25  # the greyscale copy: 24 steps across each of its 25 rows, and down each of its 25 columns
_ROWS, _COLS = _SIDE, _SIDE - 1  # one direction's grid of steps (the down steps are stored transposed)
_CELLS = _ROWS * _COLS
_MASK_BYTES = 2 * _CELLS // 8  # both directions
_COLOUR_SIDE = 6
_COLOUR_CELLS = _COLOUR_SIDE * _COLOUR_SIDE
_COLOUR_BYTES = _COLOUR_CELLS * 3
_SIGNATURE_BYTES = 3 * _MASK_BYTES + _COLOUR_BYTES
# A step is strong above half the picture's mean step and above 4 grey levels (the noise JPEG leaves
# in a flat area at this size), and only the largest 10% can be; weak from half of that, and only
# the largest 30% of steps are edges at all.
_STRONG_FLOOR = 4.0
_STRONG_OF_MEAN = 0.5
_WEAK_OF_STRONG = 0.5
_STRONG_SHARE, _EDGE_SHARE = 0.10, 0.30
# A colour cell has changed when a channel moved more than this: a 10% brightness change moves
# bright cells by about 25 levels, recolouring a shape by far more.
_COLOUR_STEP = 40


@dataclass(frozen=True)
class Rule:
    """How much two signatures may differ and still be near-duplicates (settings
    DATASET_NEAR_DUPLICATE_EDGE_PERCENT and DATASET_NEAR_DUPLICATE_COLOUR_PERCENT)."""

    edge_percent: int = 8  # of the strong edges of both, with no edge of their sign near them in the other
    colour_percent: int = 15  # of the colour cells, changed


@dataclass(frozen=True, slots=True)
class Signature:
    # A bit per cell of both directions' grids, for steps to brighter, then again for steps to darker.
    strong: int  # strong steps
    far: int  # cells with no step of that sign, of either strength, within one cell
    strong_count: int
    colours: bytes  # 6×6 cells × (Y, Cb, Cr)


def _neighbour_masks() -> tuple[int, int, int]:
    not_first = not_last = 0
    for row in range(_ROWS):
        for col in range(_COLS):
            bit = 1 << (row * _COLS + col)
            not_first |= bit if col else 0
            not_last |= bit if col != _COLS - 1 else 0
    return not_first, not_last, (1 << _CELLS) - 1


_NOT_FIRST, _NOT_LAST, _FULL = _neighbour_masks()


def _grow_grid(mask: int) -> int:
    across = mask | ((mask << 1) & _NOT_FIRST) | ((mask >> 1) & _NOT_LAST)
    return across | ((across << _COLS) & _FULL) | (across >> _COLS)


def _grow(mask: int) -> int:
    """Each set cell and its eight neighbours, in each direction's grid separately."""
    return _grow_grid(mask & _FULL) | (_grow_grid(mask >> _CELLS) << _CELLS)


def _steps(grey: Image.Image) -> tuple[Image.Image, Image.Image, Image.Image]:
    """(size, rise, fall) of each step to the right neighbour, as 24×25 images: Pillow does the
    arithmetic, which is ~10× faster than Python loops over the 1,200 steps (ingest runs it per image)."""
    left, right = grey.crop((0, 0, _COLS, _ROWS)), grey.crop((1, 0, _SIDE, _ROWS))
    return ImageChops.difference(right, left), ImageChops.subtract(right, left), ImageChops.subtract(left, right)


def _above(images: tuple[Image.Image, Image.Image], threshold: float) -> int:
    """Bit per cell of both directions' grids (cell k of the first image is bit k): value > threshold."""
    below = min(255, int(threshold)) + 1  # grey values are whole: v > t exactly when v > int(t)
    table = [48] * below + [49] * (256 - below)  # b"0", b"1"
    return int((images[0].point(table).tobytes() + images[1].point(table).tobytes())[::-1], 2)


def _level(histogram: list[int], share_above: float) -> int:
    """The grey step that `share_above` of the steps (counted in `histogram`) exceed, as sorting them
    and taking the one at that rank would give."""
    rank, seen = int(sum(histogram) * (1 - share_above)), 0
    for value, count in enumerate(histogram):
        seen += count
        if seen > rank:
            return value
    return 255  # pragma: no cover - the counts always reach the rank


def signature(img: Image.Image) -> str:
    """The stored signature of `img` (in practice its 256 px thumbnail): PREFIX + base64."""
    grey = img.convert("L").resize((_SIDE, _SIDE), Image.Resampling.BOX)
    # Down steps are the across steps of the transposed copy, so both grids share one layout.
    across, down = _steps(grey), _steps(grey.transpose(Image.Transpose.TRANSPOSE))
    histogram = [a + b for a, b in zip(across[0].histogram(), down[0].histogram(), strict=True)]
    mean = sum(value * count for value, count in enumerate(histogram)) / (2 * _CELLS)
    strong = max(_STRONG_FLOOR, _STRONG_OF_MEAN * mean, _level(histogram, _STRONG_SHARE))
    weak = min(strong, max(strong * _WEAK_OF_STRONG, _level(histogram, _EDGE_SHARE)))
    masks = (_above((across[0], down[0]), strong), _above((across[1], down[1]), weak),
             _above((across[2], down[2]), weak))
    # The mean colour of each cell, then YCbCr: the same as converting first (the conversion is
    # linear), for the cost of converting 36 pixels instead of the thumbnail.
    colours = img.convert("RGB").resize((_COLOUR_SIDE, _COLOUR_SIDE), Image.Resampling.BOX).convert("YCbCr")
    data = b"".join(mask.to_bytes(_MASK_BYTES, "big") for mask in masks) + colours.tobytes()
    return PREFIX + base64.b64encode(data).decode("ascii")


def parse(text: str) -> Signature | None:
    """The signature in a stored value; None for a blank, older or damaged one."""
    if not text.startswith(PREFIX):
        return None
    try:
        data = base64.b64decode(text[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(data) != _SIGNATURE_BYTES:
        return None
    strong, rising, falling = (int.from_bytes(data[k * _MASK_BYTES:(k + 1) * _MASK_BYTES], "big")
                               for k in range(3))
    width = 2 * _CELLS  # one sign's bits
    near = _grow(rising) | (_grow(falling) << width)
    return Signature(strong=(strong & rising) | ((strong & falling) << width), far=~near & ((1 << 2 * width) - 1),
                     strong_count=strong.bit_count(), colours=data[3 * _MASK_BYTES:])


def _unmatched_edges(a: Signature, b: Signature) -> int:
    return (a.strong & b.far).bit_count() + (b.strong & a.far).bit_count()


def _changed_cells(a: Signature, b: Signature) -> int:
    x, y, step = a.colours, b.colours, _COLOUR_STEP
    return sum(1 for k in range(0, _COLOUR_BYTES, 3)
               if abs(x[k] - y[k]) > step or abs(x[k + 1] - y[k + 1]) > step or abs(x[k + 2] - y[k + 2]) > step)


def edge_mismatch(a: Signature, b: Signature) -> float:
    """Share of the strong edges of both with no edge of their sign near them in the other (0 when
    neither has any)."""
    total = a.strong_count + b.strong_count
    return _unmatched_edges(a, b) / total if total else 0.0


def colour_change(a: Signature, b: Signature) -> float:
    """Share of the colour cells where some channel differs by more than _COLOUR_STEP levels."""
    return _changed_cells(a, b) / _COLOUR_CELLS


def is_near_duplicate(a: Signature, b: Signature, rule: Rule) -> bool:
    # A few integer operations on 2,400-bit masks, stopping early: ingest compares each new image
    # with every image of the dataset. The colour loop runs only for the few pairs that pass.
    allowed = rule.edge_percent * (a.strong_count + b.strong_count)
    unmatched = (a.strong & b.far).bit_count() * 100
    if unmatched > allowed or unmatched + (b.strong & a.far).bit_count() * 100 > allowed:
        return False
    return _changed_cells(a, b) * 100 <= rule.colour_percent * _COLOUR_CELLS
