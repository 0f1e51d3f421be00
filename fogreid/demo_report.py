"""The demo's report: one self-contained HTML page (images inline, plots as SVG)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from fogreid.validate.report import cmc_svg, png_data_uri


def _images_row(images, width: int = 120) -> str:
    return "".join(f'<img src="{png_data_uri(i)}" width="{width}" alt="sample">' for i in images)


def _samples(data: Path, folder: str, n: int = 6) -> list[np.ndarray]:
    from fogreid.data.image_io import read_image

    paths = sorted((data / folder).iterdir())
    return [read_image(p) for p in paths[:: max(len(paths) // n, 1)][:n]]


def _defog_pairs(checkpoint: Path, data: Path, folder: str, n: int = 4) -> str:
    import torch

    from fogreid.data.image_io import load_for_model
    from fogreid.model.fused import FusedDefogReID

    model = FusedDefogReID.from_checkpoint(checkpoint)
    paths = sorted((data / folder).iterdir())[:: 7][:n]
    frames = np.stack([load_for_model(p, model.input_size) for p in paths])
    with torch.no_grad():
        defogged = model(torch.from_numpy(frames))[0].numpy()
    return "".join(f'<span class="pair"><img src="{png_data_uri(f)}" width="128"><img src="{png_data_uri(d)}" '
                   f'width="128"></span>' for f, d in zip(frames, defogged))


def _video_frames(path: Path, count: int = 2) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for index in np.linspace(0, max(total - 1, 0), count).astype(int):
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, frame = capture.read()
        if ok:
            frames.append(frame)
    capture.release()
    return frames


def write_report(out: Path, summary: dict, scores: dict, verdicts: dict) -> Path:
    data, checkpoint = out / "data", Path(summary["checkpoint"])
    rows = ""
    for name, by_split in scores.items():
        syn, real = by_split["syn"], by_split["real"]
        rows += (f"<tr><td>{name}</td><td>{100 * syn['mAP']:.1f}</td><td>{100 * syn['rank1']:.1f}</td>"
                 f"<td>{100 * syn['rank5']:.1f}</td><td>{100 * real['mAP']:.1f}</td><td>{100 * real['rank1']:.1f}</td>"
                 f"<td>{syn.get('psnr', float('nan')):.2f} / {syn.get('ssim', float('nan')):.3f}</td></tr>")
    chance = summary["accuracy"]["pytorch"]["syn"]
    verdict_rows = ""
    for name, v in verdicts.items():
        f = v["figures"]
        colour = "#2e7d32" if v["verdict"] == "pass" else "#c62828"
        failing = "; ".join(f"{c['figure']} {c['value']:.4f} (needs {'>=' if c['higher_is_better'] else '<='} "
                            f"{c['threshold']:g})" for c in v["checks"] if not c["passed"])
        verdict_rows += (f'<tr><td>{name}</td><td style="color:{colour};font-weight:bold">{v["verdict"].upper()}</td>'
                         f"<td>{f['cosine_min']:.4f}</td><td>{f['nn_agreement']:.3f}</td>"
                         f"<td>{f['defog_psnr_db']:.1f}</td><td>{f.get('map_drop', 0):+.2f}</td>"
                         f'<td>{html.escape(failing) or "-"}</td><td><a href="validation/{name}.html">report</a></td></tr>')
    speed_rows = "".join(f"<tr><td>{n}</td><td>{s['batch1']}</td><td>{s['batch8']}</td></tr>"
                         for n, s in summary["speed"].items())
    stream = summary["stream"]
    fig = stream["figures"]
    not_built = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in summary["not_built"].items())
    cmc_syn = cmc_svg({n: np.array(s["syn"]["cmc"]) for n, s in scores.items()})
    cmc_real = cmc_svg({n: np.array(s["real"]["cmc"]) for n, s in scores.items()})
    outputs = [("dataset (FVRID layout)", data), ("trained model", checkpoint), ("exported artifacts", out / "export"),
               ("validation reports", out / "validation"), ("annotated stream video", stream["video"]),
               ("match events (JSON lines)", stream["events"]), ("all figures", out / "summary.json")]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fogreid demo report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} td,th{{padding:3px 10px;text-align:left}}
.pair{{display:inline-block;margin:4px;border:1px solid #ccc}} h2{{margin-top:1.6em}}</style></head><body>
<h1>fogreid demo</h1>
<p>Generated foggy vehicle data, a small SJDL model trained on it, exported to ONNX (FP32 and INT8), each
artifact validated against PyTorch, and a foggy street video run through the stream pipeline.</p>
<h2>Data</h2><p>Clear (synthetic pairs):</p>{_images_row(_samples(data, "FVRID_syn/query_clear"))}
<p>Synthetic fog (atmospheric scattering, same images):</p>{_images_row(_samples(data, "FVRID_syn/query_foggy"))}
<p>Real-like fog (patchy, tinted, noisy, compressed; other vehicles and cameras):</p>
{_images_row(_samples(data, "FVRID_real/query_foggy"))}
<h2>Defogging</h2><p>Foggy input beside the model's defogged output, synthetic then real-like:</p>
{_defog_pairs(checkpoint, data, "FVRID_syn/query_foggy")}<br>{_defog_pairs(checkpoint, data, "FVRID_real/query_foggy")}
<h2>Re-identification accuracy</h2>
<table><tr><th>model</th><th>syn mAP</th><th>syn R1</th><th>syn R5</th><th>real mAP</th><th>real R1</th>
<th>defog PSNR / SSIM (syn)</th></tr>{rows}</table>
<p>{chance['num_queries']} synthetic queries; the test identities were never seen in training.</p>
<p>CMC, synthetic fog:</p>{cmc_syn}<p>CMC, real-like fog:</p>{cmc_real}
<h2>Validation against PyTorch</h2>
<table><tr><th>artifact</th><th>verdict</th><th>cosine min</th><th>NN agreement</th><th>defog PSNR dB</th>
<th>mAP drop</th><th>failing figures</th><th></th></tr>{verdict_rows}</table>
{"<p>Not built here:</p><ul>" + not_built + "</ul>" if not_built else ""}
<h2>Speed (images/s, this machine)</h2>
<table><tr><th>model</th><th>batch 1</th><th>batch 8</th></tr>{speed_rows}</table>
<h2>Stream</h2>
<p>{fig['frames']} frames of a 640x480 foggy video with four vehicles per frame, {stream['identities']} identities
in the gallery, model {html.escape(stream['model'])}: {fig['fps']:.1f} fps, latency p50 {fig['latency_p50_ms']:.0f} ms
/ p95 {fig['latency_p95_ms']:.0f} ms, {fig['dropped']} frames dropped. The right vehicle was found for
<b>{stream['correct']} of {stream['crops']}</b> crops ({100 * stream['correct'] / max(stream['crops'], 1):.0f}%).</p>
{_images_row(_video_frames(Path(stream['video'])), width=480)}
<h2>Where the outputs are</h2><ul>{"".join(f"<li>{k}: <code>{html.escape(str(v))}</code></li>" for k, v in outputs)}</ul>
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
