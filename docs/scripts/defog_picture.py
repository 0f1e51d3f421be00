"""Draw docs/assets/defog.png, the picture of the README and the docs' front page.

Rows of test query crops the model never trained on (two of the synthetic fog, two of the
real-like fog), columns: the foggy input at the model's size, the dark channel prior
(`fogreid.data.dehaze_dcp`), the model's defog head, and the clear render (for the real-like
split, the evaluation-only clear image). Run after `make demo`:

    .venv/bin/python docs/scripts/defog_picture.py runs/demo docs/assets/defog.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from fogreid.data import dehaze_dcp, load_for_model
from fogreid.model import FusedDefogReID

CELL = 128
HEADERS = ("foggy input", "dark channel prior", "fogreid defog head", "clear")


def rows(demo: Path, model: FusedDefogReID, split: str, clear_folder: str, picks: list[int]) -> list[list[np.ndarray]]:
    paths = sorted((demo / "data" / split / "query_foggy").iterdir())
    paths = [paths[i] for i in picks]
    frames = np.stack([load_for_model(p, model.imgsz) for p in paths])
    with torch.no_grad():
        defogged = model(torch.from_numpy(frames))[0].numpy()
    return [[f, dehaze_dcp(f), d, load_for_model(demo / "data" / split / clear_folder / p.name, model.imgsz)]
            for p, f, d in zip(paths, frames, defogged, strict=True)]


def main(demo: str = "runs/demo", out: str = "docs/assets/defog.png") -> None:
    demo = Path(demo)
    model = FusedDefogReID.from_checkpoint(demo / "train" / "best.pt")
    grid = rows(demo, model, "FVRID_syn", "query_clear", [0, 14]) + rows(demo, model, "FVRID_real",
                                                                          "query_clear_eval", [0, 14])
    header = np.full((24, CELL * len(HEADERS), 3), 255, np.uint8)
    for i, text in enumerate(HEADERS):
        cv2.putText(header, text, (i * CELL + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    body = [np.hstack([cv2.resize(c, (CELL, CELL), interpolation=cv2.INTER_CUBIC) for c in row]) for row in grid]
    cv2.imwrite(out, np.vstack([header, *body]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
