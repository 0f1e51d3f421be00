"""The demo's report: one self-contained HTML page (images inline, plots as SVG).

It opens with a headline: what was built, each artifact's validation verdict and the three
figures that matter (mAP of the deployed model on real-like fog, the share of right matches
in the street video, its speed); the details follow. Stream frames are drawn from the raw
video, the match events and the video's truth, so right and wrong matches differ in colour.
"""

from __future__ import annotations

import html
import json
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


RIGHT, WRONG, UNSURE = (46, 125, 50), (40, 40, 198), (110, 110, 110)  # BGR: green, red, grey


def _label(canvas: np.ndarray, box, text: str, colour) -> None:
    """A box and a label a person can read: white text on the box's colour, kept inside the frame."""
    import cv2

    x1, y1, x2, y2 = box
    cv2.rectangle(canvas, (x1 + 3, y1 + 3), (x2 - 4, y2 - 4), colour, 6)
    scale, thickness = 1.4, 3  # about 16 px high once the frame is shown 540 px wide
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    tx = min(max(x1 + 2, 0), canvas.shape[1] - tw - 8)
    ty = min(max(y1 + 2, 0), canvas.shape[0] - th - base - 8)
    cv2.rectangle(canvas, (tx, ty), (tx + tw + 8, ty + th + base + 8), colour, -1)
    cv2.putText(canvas, text, (tx + 4, ty + th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)


def _stream_frames(stream: dict, count: int = 2) -> tuple[list[np.ndarray], str]:
    """Frames of the street video with each region's match drawn in green when it is the right
    vehicle, red when it is another, grey when no gallery vehicle was close enough, from the
    events and the video's truth. Without a truth file: the pipeline's own annotated frames."""
    import cv2

    folder = Path(stream["video"]).parent
    truth_file, raw = folder / "truth.json", folder / "video.mp4"
    try:
        truth = json.loads(truth_file.read_text())
        rois, ids = truth["rois"], truth["ids"]
        events = [json.loads(line) for line in Path(stream["events"]).read_text().splitlines() if line.strip()]
    except (OSError, KeyError, ValueError):
        total = int(cv2.VideoCapture(str(stream["video"])).get(cv2.CAP_PROP_FRAME_COUNT))
        picks = np.linspace(0, max(total - 1, 0), count).astype(int)
        return [frame for _, frame in _video_frames(Path(stream["video"]), picks)], ""
    by_frame: dict[int, list[dict]] = {}
    for event in events:
        by_frame.setdefault(event["frame"], []).append(event)
    # Frames where a wrong match is shown, if any, beside one where all are right.
    wrong = [f for f, evs in by_frame.items() if any(_verdict(e, rois, ids) == "wrong" for e in evs)]
    right = [f for f, evs in by_frame.items() if all(_verdict(e, rois, ids) == "right" for e in evs)]
    chosen = (right[:1] + wrong[:1]) or sorted(by_frame)[:count]
    chosen = sorted(chosen + [f for f in sorted(by_frame) if f not in chosen][:max(count - len(chosen), 0)])
    frames = []
    for index, frame in _video_frames(raw, chosen):
        canvas = cv2.resize(frame, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC) if frame.shape[1] < 800 else frame
        k = canvas.shape[1] / frame.shape[1]
        for event in by_frame[index]:
            verdict = _verdict(event, rois, ids)
            box = [int(round(v * k)) for v in event["box"]]
            true_id = ids[index][rois.index(event["box"])]
            if verdict == "unsure":
                text, colour = f"no match (truth {true_id})", UNSURE
            else:
                match = event["match"]
                text = f"id {match['id']} ({match['score']:.2f})" + ("" if verdict == "right" else f" true {true_id}")
                colour = RIGHT if verdict == "right" else WRONG
            _label(canvas, box, text, colour)
        frames.append(canvas)
    legend = ("Each region shows the gallery vehicle the deployed model matched and its cosine score: "
              "<span style='color:#2e7d32;font-weight:bold'>green</span> when it is the right vehicle, "
              "<span style='color:#c62828;font-weight:bold'>red</span> when it is another one (then the "
              "true id follows), grey when no gallery vehicle was close enough.")
    return frames, legend


def _verdict(event: dict, rois: list, ids: list) -> str:
    if event.get("match") is None:
        return "unsure"
    try:
        truth = str(ids[event["frame"]][rois.index(event["box"])])
    except (IndexError, ValueError):
        return "unsure"
    return "right" if event["match"]["id"] == truth else "wrong"


def _badge(verdict: str) -> str:
    colour = "#2e7d32" if verdict == "pass" else "#c62828"
    return f'<span class="badge" style="background:{colour}">{verdict.upper()}</span>'


def _headline(summary: dict, scores: dict, verdicts: dict, config: dict) -> str:
    """What was built, each artifact's verdict, and the three figures that matter: accuracy of the
    deployed model on real-like fog, the street video's right matches, and its speed."""
    stream, settings = summary["stream"], summary["settings"]
    deployed = next((k for k, v in summary["artifacts"].items() if Path(v).name == stream["model"]), "pytorch")
    real = scores.get(deployed, scores["pytorch"])["real"]
    pytorch_real = scores["pytorch"]["real"]
    speed = summary["speed"].get(deployed, {})
    share = 100 * stream["correct"] / max(stream["crops"], 1)
    built = (f"A {config.get('backbone', '?')}{'-IBN-a' if config.get('ibn') else ''} SJDL model "
             f"({settings['imgsz']}x{settings['imgsz']} px, {settings['epochs']} epochs on "
             f"{settings['data']['ids']} generated foggy identities), exported as "
             f"{', '.join(summary['artifacts'])}; <b>{html.escape(stream['model'])}</b> ran the street video.")
    verdict_list = " ".join(
        f"<span class='verdict'>{html.escape(name)} {_badge(v['verdict'])}</span>" for name, v in verdicts.items())
    cards = [
        (f"{100 * real['mAP']:.1f}%", f"mAP on real-like fog, {deployed}",
         f"PyTorch {100 * pytorch_real['mAP']:.1f}%; Rank-1 {100 * real['rank1']:.1f}%"),
        (f"{share:.0f}%", "right vehicle in the street video",
         f"{stream['correct']} of {stream['crops']} crops, {stream['identities']} vehicles never seen in training"),
        (f"{speed.get('batch8', 0):.0f} img/s", f"{deployed} at batch 8, this CPU",
         f"{speed.get('batch1', 0):.0f} img/s at batch 1; stream {stream['figures']['fps']:.1f} fps"),
    ]
    card_html = "".join(f'<div class="card"><div class="big">{v}</div><div>{t}</div><div class="small">{d}</div></div>'
                        for v, t, d in cards)
    return (f'<div class="headline"><p>{built}</p><p>Validation against PyTorch: {verdict_list}</p>'
            f'<div class="cards">{card_html}</div></div>')


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
    speed_rows = "".join(f"<tr><td>{n}</td><td>{s['batch1']}</td><td>{s['batch8']}</td></tr>"
                         for n, s in summary["speed"].items())
    stream = summary["stream"]
    fig = stream["figures"]
    not_built = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in summary["not_built"].items())
    cmc_syn = cmc_svg({n: np.array(s["syn"]["cmc"]) for n, s in scores.items()}, title="CMC, synthetic fog")
    cmc_real = cmc_svg({n: np.array(s["real"]["cmc"]) for n, s in scores.items()}, title="CMC, real-like fog")
    frames, legend = _stream_frames(stream)
    outputs = [("dataset (FVRID layout)", data), ("trained model", checkpoint), ("exported artifacts", out / "export"),
               ("validation reports", out / "validation"), ("annotated stream video", stream["video"]),
               ("match events (JSON lines)", stream["events"]), ("all figures", out / "summary.json")]
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
<p>{fig['frames']} frames of a foggy street video, {stream['identities']} vehicles in the gallery, model
{html.escape(stream['model'])}: {fig['fps']:.1f} fps, latency p50 {fig['latency_p50_ms']:.0f} ms
/ p95 {fig['latency_p95_ms']:.0f} ms, {fig['dropped']} frames dropped. The right vehicle was found for
<b>{stream['correct']} of {stream['crops']}</b> crops ({100 * stream['correct'] / max(stream['crops'], 1):.0f}%).</p>
<p>{legend}</p>
{_images_row(frames, width=540)}
<h2>Data</h2><p>Clear (synthetic pairs):</p>{_images_row(_samples(data, "FVRID_syn/query_clear"))}
<p>Synthetic fog (atmospheric scattering, same images):</p>{_images_row(_samples(data, "FVRID_syn/query_foggy"))}
<p>Real-like fog (patchy, tinted, noisy, compressed; other vehicles and cameras):</p>
{_images_row(_samples(data, "FVRID_real/query_foggy"))}
<h2>Defogging</h2><p>Synthetic fog (its clear pair):</p>
{_defog_table(model, data, "FVRID_syn", "query_clear")}
<p>Real-like fog (the clear render kept for evaluation only: no model trains on it):</p>
{_defog_table(model, data, "FVRID_real", "query_clear_eval")}
<h2>Speed (images/s, this machine)</h2>
<table><tr><th>model</th><th>batch 1</th><th>batch 8</th></tr>{speed_rows}</table>
<h2>Where the outputs are</h2><ul>{output_items}</ul>
</body></html>"""
    path = out / "report.html"
    with atomic_write(path, "w") as handle:
        handle.write(page)
    return path
