"""Prediction grids: one row per query (the query, then its top-k with a green border if correct, red if not)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from registry._util.atomic import atomic_path
from registry.datasets import VPRDataset
from registry.datasets.images import open_rgb

TILE_H = 120
BORDER = 6
GAP = 4
CAPTION_H = 14
ROWS_PER_PAGE = 10
GREEN, RED, GREY, WHITE = (0, 170, 0), (220, 0, 0), (90, 90, 90), (255, 255, 255)


def _tile(path: Path, size: tuple, colour: tuple, caption: str) -> Image.Image:
    """The image fitted into `size` (w, h) with a coloured border and a caption strip above it."""
    w, h = size
    img = ImageOps.pad(open_rgb(path), (w - 2 * BORDER, h - 2 * BORDER), color=(0, 0, 0))
    tile = Image.new("RGB", (w, h + CAPTION_H), WHITE)
    ImageDraw.Draw(tile).rectangle([0, CAPTION_H, w - 1, CAPTION_H + h - 1], fill=colour)
    tile.paste(img, (BORDER, CAPTION_H + BORDER))
    ImageDraw.Draw(tile).text((2, 1), caption, fill=(0, 0, 0))
    return tile


def _tile_size(ds: VPRDataset) -> tuple:
    with Image.open(ds.q_images[0]) as img:
        w, h = img.size
    return max(2 * BORDER + 8, round(TILE_H * w / h)), TILE_H


def grid_image(ds: VPRDataset, queries: Sequence[int], pred: np.ndarray) -> Image.Image:
    """A grid for `queries` with their rows of `pred` (database indices, -1 for none)."""
    size = _tile_size(ds)
    cols = 1 + pred.shape[1]
    row_h = size[1] + CAPTION_H
    canvas = Image.new("RGB", (cols * (size[0] + GAP), len(queries) * (row_h + GAP)), WHITE)
    for r, qi in enumerate(queries):
        y = r * (row_h + GAP)
        canvas.paste(_tile(ds.q_images[qi], size, GREY, f"query {qi}"), (0, y))
        positives = set(ds.positives[qi].tolist())
        for c, di in enumerate(pred[qi], start=1):
            if di < 0:
                continue
            colour = GREEN if int(di) in positives else RED
            canvas.paste(_tile(ds.db_images[di], size, colour, f"#{c} db {di}"), (c * (size[0] + GAP), y))
    return canvas


def save_grids(ds: VPRDataset, queries: Sequence[int], pred: np.ndarray, stem: Path) -> List[Path]:
    """PNG pages `<stem>_pNN.png` of at most ROWS_PER_PAGE queries each; returns the files written."""
    files = []
    for page, start in enumerate(range(0, len(queries), ROWS_PER_PAGE)):
        path = Path(f"{stem}_p{page:02d}.png")
        with atomic_path(path) as tmp:
            grid_image(ds, queries[start : start + ROWS_PER_PAGE], pred).save(tmp, format="PNG")
        files.append(path)
    return files
