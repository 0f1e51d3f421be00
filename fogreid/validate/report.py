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


def write_json(results: ValidationResult | list[ValidationResult], path: str | Path) -> None:
    """One result as its own object; several (artifacts x engines) under "results", with the
    overall verdict and the cross-engine table beside them."""
    if isinstance(results, ValidationResult) or len(results) == 1:
        payload = (results if isinstance(results, ValidationResult) else results[0]).to_json()
    else:
        payload = {"verdict": "pass" if all(r.passed for r in results) else "fail",
                   "checkpoint": results[0].checkpoint, "table": cross_engine_rows(results),
                   "results": [r.to_json() for r in results]}
    with atomic_write(path, "w") as handle:
        json.dump(payload, handle, indent=2)


def cross_engine_rows(results: list[ValidationResult]) -> list[dict]:
    """One row per (artifact, engine): the figures that say whether they agree with PyTorch."""
    rows = []
    for r in results:
        f = r.figures
        rows.append({"artifact": Path(r.artifact).name, "engine": r.backend, "precision": r.precision,
                     "cosine_min": f.get("cosine_min"), "cosine_p1": f.get("cosine_p1"),
                     "nn_agreement": f.get("nn_agreement"), "map_drop": f.get("map_drop"),
                     "defog_psnr_db": f.get("defog_psnr_db"), "verdict": "pass" if r.passed else "FAIL"})
    return rows


def cross_engine_table(results: list[ValidationResult]) -> str:
    """The rows above as a plain-text table, as `fogreid validate` prints it."""
    header = ("artifact", "engine", "precision", "cos min", "cos p1", "NN agree", "mAP drop", "defog dB", "verdict")
    lines = [header]
    for row in cross_engine_rows(results):
        lines.append((row["artifact"], row["engine"], row["precision"],
                      *(("-" if row[k] is None else f"{row[k]:.{d}f}") for k, d in
                        (("cosine_min", 4), ("cosine_p1", 4), ("nn_agreement", 3), ("map_drop", 2),
                         ("defog_psnr_db", 1))), row["verdict"]))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def png_data_uri(image: np.ndarray) -> str:
    from fogreid.data.image_io import encode_image

    return "data:image/png;base64," + base64.b64encode(encode_image(image, ".png")).decode()


def _difference_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| per pixel, stretched so one grey level is visible, as a heat map."""
    import cv2

    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)
    scaled = np.clip(diff * 32, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)


def _svg(fig, label: str) -> str:
    """A matplotlib figure as inline SVG (text kept as text: small, selectable), labelled for
    screen readers."""
    import io

    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return f'<svg role="img" aria-label="{html.escape(label)}"' + text[text.index("<svg") + 4:]


def _figure(width: float, height: float):
    # The object-oriented API, not pyplot: no global state, no display needed.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot()


def histogram_svg(values: np.ndarray, threshold: float | None = None,
                  title: str = "Embedding cosine, PyTorch vs artifact") -> str:
    """Histogram of per-image cosine similarities, with the pass threshold as a line."""
    values = np.asarray(values, dtype=np.float64)
    fig, ax = _figure(5.6, 2.6)
    low = float(min(values.min(), threshold if threshold is not None else 1.0, 0.999))
    low -= 0.05 * (1.0 - low)  # a margin, so a threshold at the low end stays visible
    ax.hist(values, bins=30, range=(low, 1.0), color="#4c78a8", edgecolor="white", label="images")
    if threshold is not None:
        ax.axvline(threshold, color="#c62828", linestyle="--", linewidth=1.5, label=f"threshold {threshold:g}")
        ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_xlim(low, 1.0)
    ax.set_xlabel("cosine similarity (1 = identical embeddings)")
    ax.set_ylabel("images")
    ax.set_title(title, fontsize=10)
    ax.ticklabel_format(axis="x", useOffset=False)
    return _svg(fig, "cosine histogram")


PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")
STYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "x")


def cmc_svg(curves: dict[str, np.ndarray], title: str = "CMC: share of queries matched within the top k",
            max_rank: int = 20) -> str:
    """CMC curves in percent over ranks 1..max_rank. Curves that coincide (an artifact as
    accurate as PyTorch) stay visible: each has its own dash pattern and marker, and the
    legend, beside the plot, gives each one's Rank-1."""
    fig, ax = _figure(5.0, 3.0)
    shown = min(max((len(c) for c in curves.values()), default=1), max_rank)
    step = max(shown // 6, 1)
    for i, (name, curve) in enumerate(curves.items()):
        curve = 100 * np.asarray(curve, dtype=np.float64)[:shown]
        ax.plot(np.arange(1, len(curve) + 1), curve, color=PALETTE[i % len(PALETTE)],
                linestyle=STYLES[i % len(STYLES)], linewidth=1.8, alpha=0.9,
                marker=MARKERS[i % len(MARKERS)], markersize=5, markevery=(i % step, step),  # staggered markers
                label=f"{name} (Rank-1 {curve[0]:.1f}%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(1, max(shown, 2))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # ranks are whole numbers
    ax.set_xlabel("rank k")
    ax.set_ylabel("queries matched (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(len(curves), 3), fontsize=8,
              frameon=False)  # below the axes: never over a curve
    return _svg(fig, "CMC curves")


def _threshold(result: ValidationResult, figure: str) -> float | None:
    return next((c.threshold for c in result.checks if c.figure == figure), None)


def write_html(results: ValidationResult | list[ValidationResult], path: str | Path) -> None:
    """One page: the overall verdict, the cross-engine table when there are several results,
    then each result's checks, figures, frames and plots."""
    results = [results] if isinstance(results, ValidationResult) else list(results)
    passed = all(r.passed for r in results)
    verdict = "PASS" if passed else "FAIL"
    colour = "#2e7d32" if passed else "#c62828"
    table = ""
    if len(results) > 1:
        rows = cross_engine_rows(results)
        body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row.values()) + "</tr>" for row in rows)
        table = (f"<h2>Every artifact on every engine</h2><table><tr>{''.join(f'<th>{h}</th>' for h in rows[0])}</tr>"
                 f"{body}</table>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fogreid validation: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}} td,th{{padding:3px 10px;text-align:left}}
.verdict{{font-size:2em;color:{colour};font-weight:bold}}</style></head><body>
<div class="verdict" id="verdict">{verdict}</div>
{table}{"".join(_result_section(r, len(results) > 1) for r in results)}</body></html>"""
    with atomic_write(path, "w") as handle:
        handle.write(page)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _result_section(result: ValidationResult, titled: bool) -> str:
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
        frames += ("<tr>" + "".join(f'<td><img src="{png_data_uri(c)}" width="160" alt="frame {i}"></td>'
                                    for c in cells) + "</tr>")
    cmc = f"<h2>CMC curves (query/gallery)</h2>{cmc_svg(result.cmc)}" if result.cmc else ""
    title = (f"<h1>{html.escape(Path(result.artifact).name)} on {result.backend}: "
             f"{'PASS' if result.passed else 'FAIL'}</h1>" if titled else "")
    subject = f"{html.escape(result.artifact)} ({result.backend}, {result.precision})"
    return f"""{title}<p>{subject} against {html.escape(result.checkpoint)}
(PyTorch), on {result.images} foggy images.</p>
{"<p><b>Failing:</b> " + html.escape("; ".join(failing)) + "</p>" if failing else ""}
<h2>Checks</h2><table><tr><th>figure</th><th>value</th><th>threshold</th><th></th></tr>{checks}</table>
<h2>Figures</h2><table>{rows}</table>
<h2>Frames</h2><table><tr><th>foggy input</th><th>PyTorch defogged</th><th>artifact defogged</th>
<th>difference (x32)</th></tr>{frames}</table>
<h2>Embedding cosine, PyTorch vs artifact</h2>{histogram_svg(result.cosines, _threshold(result, "cosine_min"))}
{cmc}"""
