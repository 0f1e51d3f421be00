"""When a frame is foggy: fog density per frame, for `fogreid run --defog auto` (which views are
defogged) and `--embed-defogged auto` (which crops are identified by their defogged crop's
embedding; fogreid/runtime/pipeline.py keeps a gate of its own for that).

The view's gate never changes an identity: detections, embeddings and matches are the same
whichever `--defog` mode is chosen. What it saves is the defogged view: on a clear camera the
operator sees the frame as it is (no defog artefacts where there is nothing to remove) and
`--defog-view frame` skips the whole-frame defog graph, the costliest stage of a stream.

The measure is the dark channel prior's (He, Sun and Tang, CVPR 2009; the estimator of
fogreid.data.dehaze): fog density = 1 - the mean coarse transmission, on the frame at a quarter
of its size (a 5-pixel patch there, 20 at full size). It needs no reference image and no
model. Per source it is averaged over time (an exponential mean) and switched with a margin, so
one white truck does not flip the view. It is a scene-dependent measure: bright roads, walls and
skies have a high dark channel and read as fog. On the generated cities of benchmarks/mtmc.py
(416x240, 3 cameras each, 2 cities per level) the cameras' median densities were 0.52-0.72 clear,
0.68-0.80 at beta 1.0: at the default threshold 0.65, 4 of 6 clear cameras are shown as they are
and every foggy one is defogged (benchmarks/fog_gate.py measures more levels). Measure your
cameras with `fog_density` and set `--fog-threshold`: a threshold too low costs speed (defogged
views and second passes of clear frames), one too high leaves foggy frames undefogged and
identified by their foggy crops.
"""

from __future__ import annotations

import numpy as np

MODES = ("auto", "always", "never")
DEFAULT_THRESHOLD = 0.65
SCALE = 4          # the frame is measured at 1/SCALE of its size
PATCH = 5          # dark channel patch at that size
SMOOTHING = 0.2    # weight of the newest frame in the per-source mean
MARGIN = 0.02      # a source switches state only this far past the threshold


def fog_density(frame: np.ndarray) -> float:
    """Fog density of a uint8 BGR frame, in [0, 1]: 1 - the dark channel prior's mean
    transmission (0: clear, towards 1: dense fog)."""
    import cv2

    from fogreid.data.dehaze import coarse_transmission

    h, w = frame.shape[:2]
    small = cv2.resize(frame, (max(w // SCALE, PATCH), max(h // SCALE, PATCH)), interpolation=cv2.INTER_AREA)
    transmission, _ = coarse_transmission(small.astype(np.float32) / 255.0, PATCH)
    return float(np.clip(1.0 - transmission.mean(), 0.0, 1.0))


class FogGate:
    """foggy(source, frame) -> bool: whether this frame's view should be defogged."""

    def __init__(self, mode: str = "auto", threshold: float = DEFAULT_THRESHOLD) -> None:
        if mode not in MODES:
            raise ValueError(f"defog mode {mode!r}: choose {', '.join(MODES)}")
        self.mode, self.threshold = mode, threshold
        self.density: dict[str, float] = {}     # each source's running mean
        self.state: dict[str, bool] = {}
        self.frames = {"foggy": 0, "clear": 0}

    def foggy(self, source: str, frame: np.ndarray, density: float | None = None) -> bool:
        """`density`: the frame's fog_density when the caller has measured it already."""
        if self.mode != "auto":
            verdict = self.mode == "always"
        else:
            density = fog_density(frame) if density is None else density
            mean = self.density.get(source, density)
            mean = self.density[source] = (1 - SMOOTHING) * mean + SMOOTHING * density
            was = self.state.get(source, mean >= self.threshold)
            verdict = self.state[source] = mean >= self.threshold - MARGIN if was else mean >= self.threshold + MARGIN
        self.frames["foggy" if verdict else "clear"] += 1
        return verdict

    def describe(self) -> str:
        seen = self.frames["foggy"] + self.frames["clear"]
        if self.mode != "auto" or not seen:
            return f"defog {self.mode}"
        return (f"defog auto (fog density >= {self.threshold:g}): {self.frames['foggy']} of {seen} frames defogged, "
                f"{self.frames['clear']} shown as they are")
