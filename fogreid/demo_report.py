"""The demo's report: one self-contained HTML page (images inline, plots as SVG).

It opens with a headline: what was built, each artifact's validation verdict and the three
figures that matter (mAP of the deployed model on real-like fog, cross-camera IDF1 in the
generated city, speed); the details follow. The stream section shows the same frame of each
camera from each model's annotated video, side by side.
"""

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


def _defog_table(model, data: Path, split: str, clear_folder: str, n: int = 4) -> str:
    """Rows of foggy input, dark channel prior, the model's (a FusedDefogReID) defog output and
    the clear image (for the real-like split, the eval-only clear render no model trained on)."""
    import torch

    from fogreid.data.dehaze import dehaze_dcp
    from fogreid.data.image_io import load_for_model

    paths = sorted((data / split / "query_foggy").iterdir())[:: 7][:n]
    frames = np.stack([load_for_model(p, model.imgsz) for p in paths])
    with torch.no_grad():
        defogged = model(torch.from_numpy(frames))[0].numpy()
    rows = []
    for path, foggy, ours in zip(paths, frames, defogged, strict=True):
        clear = data / split / clear_folder / path.name
        cells = [foggy, dehaze_dcp(foggy), ours]
        if clear.is_file():
            cells.append(load_for_model(clear, model.imgsz))
        rows.append("<tr>" + "".join(f'<td><img src="{png_data_uri(c)}" width="128"></td>' for c in cells) + "</tr>")
    return ("<table><tr><th>foggy input</th><th>dark channel prior</th><th>defog head</th><th>clear</th></tr>"
            + "".join(rows) + "</table>")


def _video_frames(path: Path, indices) -> list[tuple[int, np.ndarray]]:
    """(index, frame) for each index the video could be read at: a frame that fails to decode is
    left out with its index, so the boxes of the others stay on their own frames."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    for index in indices:
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, frame = capture.read()
        if ok:
            frames.append((int(index), frame))
    capture.release()
    return frames


MODEL_NAMES = {"sjdl": "SJDL (defog + ReID)", "reid_only": "ReID only"}


def _busiest_frame(detections: list[dict], source: str) -> int:
    """The frame of `source` with the most tracked vehicles (the first such), 0 if none."""
    counts: dict[int, int] = {}
    for event in detections:
        if event["source"] == source and event.get("global_id") is not None:
            counts[event["frame"]] = counts.get(event["frame"], 0) + 1
    return max(sorted(counts), key=lambda f: counts[f]) if counts else 0


def _city_rows(stream: dict) -> str:
    """Per camera, the same frame from each model's annotated video, side by side."""
    from fogreid.mtmc import read_events

    models = stream["models"]
    detections = read_events(next(iter(models.values()))["events"])   # the frames are chosen on the first model's
    rows = ""
    for c, (camera, beta) in enumerate(zip(stream["cameras"], stream["fog"], strict=True)):
        index = _busiest_frame(detections, str(Path(stream["city"]) / camera / "video.mp4"))
        cells = []
        for name, run in models.items():
            shown = _video_frames(Path(run["videos"][c]), [index])
            view = " (whole-frame defog view, --defog auto)" if run["defog_view"] else ""
            cells.append(f'<td><img src="{png_data_uri(shown[0][1])}" width="400" alt="{name} {camera}"><br>'
                         f'{html.escape(MODEL_NAMES.get(name, name))}{view}</td>' if shown else "<td>-</td>")
        rows += f"<tr><th>{camera}<br>beta {beta:g}<br>frame {index}</th>{''.join(cells)}</tr>"
    return f"<table>{rows}</table>"


def _city_table(stream: dict) -> str:
    rows = ""
    for name, run in stream["models"].items():
        scores, fig = run["scores"], run["figures"]
        cams = "".join(f"<td>{scores[c]['idf1']:.1f} / {scores[c]['mota']:.1f}</td>" for c in stream["cameras"])
        rows += (f"<tr><td>{html.escape(MODEL_NAMES.get(name, name))}</td>{cams}"
                 f"<td><b>{scores['cross-camera']['idf1']:.1f}</b></td><td>{fig['global_ids']}</td>"
                 f"<td>{fig['fps']:.1f}</td></tr>")
    heads = "".join(f"<th>{c} (beta {b:g})<br>IDF1 / MOTA</th>" for c, b in zip(stream["cameras"], stream["fog"],
                                                                              strict=True))
    return (f"<table><tr><th>model</th>{heads}<th>cross-camera IDF1</th><th>global ids</th><th>fps</th></tr>"
            f"{rows}</table>")


def _badge(verdict: str) -> str:
    colour = "#2e7d32" if verdict == "pass" else "#c62828"
    return f'<span class="badge" style="background:{colour}">{verdict.upper()}</span>'


def _headline(summary: dict, scores: dict, verdicts: dict, config: dict) -> str:
    """What was built, each artifact's verdict, and the three figures that matter: accuracy of the
    deployed model on real-like fog, cross-camera IDF1 in the generated city, and speed."""
    stream, settings = summary["stream"], summary["settings"]
    deployed = "onnx-int8" if "onnx-int8" in summary["artifacts"] else "onnx"
    real = scores.get(deployed, scores["pytorch"])["real"]
    pytorch_real = scores["pytorch"]["real"]
    speed = summary["speed"].get(deployed, {})
    city = {name: run["scores"] for name, run in stream["models"].items()}
    cams = [city["sjdl"][c]["idf1"] for c in stream["cameras"]]
    versus = (f"ReID-only model {city['reid_only']['cross-camera']['idf1']:.1f}; " if "reid_only" in city else "")
    built = (f"A {config.get('backbone', '?')}{'-IBN-a' if config.get('ibn') else ''} SJDL model "
             f"({settings['imgsz']}x{settings['imgsz']} px, {settings['epochs']} epochs on "
             f"{settings['data']['ids']} generated foggy identities), exported as "
             f"{', '.join(summary['artifacts'])}; its ONNX model tracked {stream['vehicles']} vehicles through "
             f"{len(stream['cameras'])} cameras{' beside a ReID-only model trained the same way' if versus else ''}.")
    verdict_list = " ".join(
        f"<span class='verdict'>{html.escape(name)} {_badge(v['verdict'])}</span>" for name, v in verdicts.items())
    cards = [
        (f"{100 * real['mAP']:.1f}%", f"mAP on real-like fog, {deployed}",
         f"PyTorch {100 * pytorch_real['mAP']:.1f}%; Rank-1 {100 * real['rank1']:.1f}%"),
        (f"{city['sjdl']['cross-camera']['idf1']:.1f}", "cross-camera IDF1 in the generated city",
         f"{versus}per-camera IDF1 {sum(cams) / len(cams):.1f}; vehicles never seen in training"),
        (f"{speed.get('batch8', 0):.0f} img/s", f"{deployed} at batch 8, this CPU",
         f"{speed.get('batch1', 0):.0f} img/s at batch 1; the city "
         f"{stream['models']['sjdl']['figures']['fps']:.1f} frames/s"),
    ]
    card_html = "".join(f'<div class="card"><div class="big">{v}</div><div>{t}</div><div class="small">{d}</div></div>'
                        for v, t, d in cards)
    return (f'<div class="headline"><p>{built}</p><p>Validation against PyTorch: {verdict_list}</p>'
            f'<div class="cards">{card_html}</div></div>')


def _frames_paragraph(tuning: dict | None) -> str:
    """The whole-frame head's figures (`fogreid train --mode frames`), where the demo trained one."""
    if not tuning:
        return ""
    before, after = tuning["init"], tuning["tuned"]
    return (f"<p>Whole camera frames (the whole-frame graph, the network at 1/{tuning['downscale']} of the frame) "
            f"are defogged by a whole-frame head of their own, trained on whole generated frames "
            f"(<code>fogreid train --mode frames</code>; the crops and embeddings above are unchanged by it). On "
            f"{html.escape(tuning['held_out'])} no training saw: PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB, "
            f"SSIM {before['ssim']:.3f} -> {after['ssim']:.3f} against the clear render (the foggy frames: "
            f"{before['psnr_foggy']:.2f} dB / {before['ssim_foggy']:.3f}).</p>")


def _speed_cell(speed: dict, batch: int) -> str:
    """img/s at `batch` and, where the run recorded it, the engine that ran (summaries before
    2026-12-06 have none)."""
    engine = speed.get(f"engine{batch}")
    return f"{speed[f'batch{batch}']}" + (f" ({engine})" if engine else "")


def write_report(out: Path, summary: dict, scores: dict, verdicts: dict) -> Path:
    from fogreid.fileio import atomic_write
    from fogreid.model.checkpoint import read_checkpoint
    from fogreid.model.fused import FusedDefogReID

    data, checkpoint = out / "data", Path(summary["checkpoint"])
    config = read_checkpoint(checkpoint).get("model_config", {})
    model = FusedDefogReID.from_checkpoint(checkpoint)   # for the defogging pictures, both splits
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
        failing = "; ".join(f"{c['figure']} {c['value']:.4f} (needs {'>=' if c['higher_is_better'] else '<='} "
                            f"{c['threshold']:g})" for c in v["checks"] if not c["passed"])
        verdict_rows += (f'<tr><td>{name.split("@")[0]}</td><td>{v.get("engine", v.get("backend", "-"))}</td>'
                         f'<td>{_badge(v["verdict"])}</td><td>{f["cosine_min"]:.4f}</td><td>{f["cosine_p1"]:.4f}</td>'
                         f"<td>{f['nn_agreement']:.3f}</td>"
                         f"<td>{f['defog_psnr_db']:.1f}</td><td>{f.get('map_drop', 0):+.2f}</td>"
                         f'<td>{html.escape(failing) or "-"}</td>'
                         f'<td><a href="validation/{v.get("html", name + ".html")}">report</a></td></tr>')
    speed_rows = "".join(f"<tr><td>{n}</td><td>{_speed_cell(s, 1)}</td><td>{_speed_cell(s, 8)}</td></tr>"
                         for n, s in summary["speed"].items())
    stream = summary["stream"]
    not_built = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in summary["not_built"].items())
    cmc_syn = cmc_svg({n: np.array(s["syn"]["cmc"]) for n, s in scores.items()}, title="CMC, synthetic fog")
    cmc_real = cmc_svg({n: np.array(s["real"]["cmc"]) for n, s in scores.items()}, title="CMC, real-like fog")
    outputs = [("dataset (FVRID layout)", data), ("trained model", checkpoint), ("exported artifacts", out / "export"),
               ("validation reports", out / "validation"), ("generated city", stream["city"])]
    outputs += [(f"{MODEL_NAMES.get(n, n)}: annotated videos and events", Path(r["events"]).parent)
                for n, r in stream["models"].items()]
    outputs += [("all figures", out / "summary.json")]
    output_items = "".join(f"<li>{k}: <code>{html.escape(str(v))}</code></li>" for k, v in outputs)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fogreid demo report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}} td,th{{padding:3px 10px;text-align:left}}
h2{{margin-top:1.6em}}
.headline{{background:#f4f6f8;border-radius:8px;padding:1em 1.4em}} .cards{{display:flex;gap:1em;flex-wrap:wrap}}
.card{{background:white;border-radius:8px;padding:.8em 1.2em;min-width:220px;flex:1;box-shadow:0 1px 3px #0002}}
.big{{font-size:2.2em;font-weight:bold}} .small{{color:#555;font-size:.9em;margin-top:.3em}}
.badge{{color:white;font-weight:bold;padding:2px 8px;border-radius:4px;font-size:.9em}} .verdict{{margin-right:1.2em}}
.plots{{display:flex;flex-wrap:wrap;gap:1em}}</style></head><body>
<h1>fogreid demo</h1>
{_headline(summary, scores, verdicts, config)}
<h2>Validation against PyTorch</h2>
<table><tr><th>artifact</th><th>engine</th><th>verdict</th><th>cosine min</th><th>cosine p1</th><th>NN agreement</th>
<th>defog PSNR dB</th><th>mAP drop (points)</th><th>failing figures</th><th></th></tr>{verdict_rows}</table>
{"<p>Not built here:</p><ul>" + not_built + "</ul>" if not_built else ""}
<h2>Re-identification accuracy</h2><p>mAP and Rank-k in percent.</p>
<table><tr><th>model</th><th>syn mAP</th><th>syn R1</th><th>syn R5</th><th>real mAP</th><th>real R1</th>
<th>defog PSNR dB / SSIM (syn)</th></tr>{rows}</table>
<p>{chance['num_queries']} synthetic queries; the test identities were never seen in training.</p>
<div class="plots">{cmc_syn}{cmc_real}</div>
<h2>Stream</h2>
<p>A generated city: {len(stream['cameras'])} cameras of 640x480 at 10 fps ({stream['frames']} frames each), from
clear to dense fog, {stream['vehicles']} vehicles the models never trained on driving through. Each model ran
through <code>fogreid run</code> with the city's public detections (MOTChallenge det.txt): ByteTrack per camera,
track-level ReID, one global id per vehicle across cameras, the annotated video saved; the joint model's video
shows the whole-frame defog view where there is fog. <code>fogreid eval-mtmc</code> scored the events against
the city's ground truth (motmetrics; per-camera tracks hardly depend on the embedding, the cross-camera IDF1 does).</p>
{_city_table(stream)}
{_city_rows(stream)}
<h2>Data</h2><p>Clear (synthetic pairs):</p>{_images_row(_samples(data, "FVRID_syn/query_clear"))}
<p>Synthetic fog (atmospheric scattering, same images):</p>{_images_row(_samples(data, "FVRID_syn/query_foggy"))}
<p>Real-like fog (patchy, tinted, noisy, compressed; other vehicles and cameras):</p>
{_images_row(_samples(data, "FVRID_real/query_foggy"))}
<h2>Defogging</h2><p>Synthetic fog (its clear pair):</p>
{_defog_table(model, data, "FVRID_syn", "query_clear")}
<p>Real-like fog (the clear render kept for evaluation only: no model trains on it):</p>
{_defog_table(model, data, "FVRID_real", "query_clear_eval")}
{_frames_paragraph(summary.get("frames_tuning"))}
<h2>Speed (images/s and engine, this machine; loaded per batch, medians of interleaved rounds)</h2>
<table><tr><th>model</th><th>batch 1</th><th>batch 8</th></tr>{speed_rows}</table>
<h2>Where the outputs are</h2><ul>{output_items}</ul>
</body></html>"""
    path = out / "report.html"
    with atomic_write(path, "w") as handle:
        handle.write(page)
    return path
