"""The validation report as JSON and as one self-contained HTML page (images inline as
PNG, plots as SVG): the verdict at the top, then the figures, a few frames (foggy input,
PyTorch's defogged output, the artifact's, their difference), the embedding cosine
histogram and, with a dataset, both CMC curves."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from fogreid.fileio import atomic_write
from fogreid.validate.compare import ValidationResult


def write_json(result: ValidationResult, path: str | Path) -> None:
    with atomic_write(path, "w") as handle:
        json.dump(result.to_json(), handle, indent=2)


def png_data_uri(image: np.ndarray) -> str:
    from fogreid.data.image_io import encode_image

    return "data:image/png;base64," + base64.b64encode(encode_image(image, ".png")).decode()


def _difference_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| per pixel, stretched so one grey level is visible, as a heat map."""
    import cv2

    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)
    scaled = np.clip(diff * 32, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)


def histogram_svg(values: np.ndarray, width: int = 420, height: int = 160, bins: int = 30) -> str:
    low = float(min(values.min(), 0.999))
    counts, edges = np.histogram(values, bins=bins, range=(low, 1.0))
    bar_w = width / bins
    top = max(counts.max(), 1)
    bars = "".join(f'<rect x="{i * bar_w:.1f}" y="{height - 20 - c / top * (height - 30):.1f}" width="{bar_w - 1:.1f}" '
                   f'height="{c / top * (height - 30):.1f}" fill="#4c78a8"/>' for i, c in enumerate(counts))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="cosine histogram">{bars}'
            f'<text x="0" y="{height - 4}" font-size="11">{edges[0]:.4f}</text>'
            f'<text x="{width - 30}" y="{height - 4}" font-size="11">1.0</text></svg>')


PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")


def cmc_svg(curves: dict[str, np.ndarray], width: int = 420, height: int = 200) -> str:
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(curves)}
    plot = ""
    for name, curve in curves.items():
        xs = np.linspace(30, width - 10, len(curve))
        ys = height - 25 - np.asarray(curve) * (height - 40)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
        plot += f'<polyline points="{points}" fill="none" stroke="{colours[name]}" stroke-width="2"/>'
    legend = "".join(f'<text x="{30 + 130 * i}" y="14" font-size="12" fill="{colours[n]}">{html.escape(n)}</text>'
                     for i, n in enumerate(curves))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="CMC curves">{legend}{plot}'
            f'<text x="30" y="{height - 6}" font-size="11">rank 1</text>'
            f'<text x="{width - 50}" y="{height - 6}" font-size="11">rank {len(next(iter(curves.values())))}</text>'
            f'<text x="0" y="30" font-size="11">1.0</text><text x="0" y="{height - 25}" font-size="11">0</text></svg>')


def write_html(result: ValidationResult, path: str | Path) -> None:
    verdict = "PASS" if result.passed else "FAIL"
    colour = "#2e7d32" if result.passed else "#c62828"
    failing = [c.describe() for c in result.checks if not c.passed]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" if isinstance(v, float) else
                   f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in result.figures.items())
    checks = "".join(f'<tr><td>{c.figure}</td><td>{c.value:.4f}</td><td>{">=" if c.higher_is_better else "<="} '
                     f'{c.threshold:g}</td><td style="color:{"#2e7d32" if c.passed else "#c62828"}">'
                     f'{"pass" if c.passed else "FAIL"}</td></tr>' for c in result.checks)
    samples = result.samples
    frames = ""
    for i in range(len(samples.get("foggy", []))):
        cells = [samples["foggy"][i], samples["pytorch"][i], samples["artifact"][i],
                 _difference_map(samples["pytorch"][i], samples["artifact"][i])]
        frames += "<tr>" + "".join(f'<td><img src="{png_data_uri(c)}" width="160" alt="frame {i}"></td>' for c in cells) + "</tr>"
    cmc = f"<h2>CMC curves (query/gallery)</h2>{cmc_svg(result.cmc)}" if result.cmc else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fogreid validation: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}} td,th{{padding:3px 10px;text-align:left}}
.verdict{{font-size:2em;color:{colour};font-weight:bold}}</style></head><body>
<div class="verdict" id="verdict">{verdict}</div>
<p>{html.escape(result.artifact)} ({result.backend}, {result.precision}) against {html.escape(result.checkpoint)}
(PyTorch), on {result.images} foggy images.</p>
{"<p><b>Failing:</b> " + html.escape("; ".join(failing)) + "</p>" if failing else ""}
<h2>Checks</h2><table><tr><th>figure</th><th>value</th><th>threshold</th><th></th></tr>{checks}</table>
<h2>Figures</h2><table>{rows}</table>
<h2>Frames</h2><table><tr><th>foggy input</th><th>PyTorch defogged</th><th>artifact defogged</th>
<th>difference (x32)</th></tr>{frames}</table>
<h2>Embedding cosine, PyTorch vs artifact</h2>{histogram_svg(result.cosines)}
{cmc}</body></html>"""
    with atomic_write(path, "w") as handle:
        handle.write(page)
