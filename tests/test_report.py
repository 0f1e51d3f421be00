"""The report plots: titled axes in the units they claim, legends that name every curve."""

from __future__ import annotations

import re

import numpy as np

from fogreid.validate.report import cmc_svg, histogram_svg


def test_cmc_plot_is_in_percent_with_titled_axes():
    curve = np.linspace(0.5, 1.0, 30)
    svg = cmc_svg({"pytorch": curve, "onnx-int8": curve * 0.9}, title="CMC, real-like fog")
    assert svg.startswith("<svg") and "CMC, real-like fog" in svg
    assert "rank k" in svg and "queries matched (%)" in svg
    assert "pytorch (Rank-1 50.0%)" in svg and "onnx-int8 (Rank-1 45.0%)" in svg
    ticks = {t for t in re.findall(r">(\d+)<", svg)}
    assert "100" in ticks and "0" in ticks        # the y axis ends at 100 %, labelled where it is
    assert not any("." in t for t in re.findall(r">([0-9.]+)</text>", svg))  # whole-number ranks and percents


def test_histogram_shows_the_threshold():
    svg = histogram_svg(np.array([0.99, 0.995, 1.0]), threshold=0.97)
    assert "threshold 0.97" in svg and "cosine similarity" in svg
