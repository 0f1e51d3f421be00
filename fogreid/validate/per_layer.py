"""INT8 debugging: which layers lose the most accuracy when quantised?

Sensitivity analysis over the quantised layers of the network body: for each, a model with
only that layer quantised (same activation ranges as the full INT8 build) is compared with
the FP32 graph on held-out foggy frames. The layers that alone cost the most embedding
cosine (then defog PSNR) are the candidates to keep in higher precision. Q/DQ effects do
not add up (shared tensors, residual additions), so the list is chosen greedily: most
sensitive first, each kept only if a real build with it in float improves the embedding
cosine. The list is written for `fogreid export --keep-fp @FILE`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fogreid.errors import FogreidError


@dataclass
class LayerScore:
    node: str
    cosine_mean: float       # embedding cosine vs FP32 with only this layer quantised
    psnr_db: float
    share: float             # its embedding error, as a fraction of the all-INT8 error


def _outputs(path: Path, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from fogreid.runtime.backends import onnxruntime_session

    session = onnxruntime_session(path, "cpu")
    results = [session.run(None, {"frames": frames[i:i + 32]}) for i in range(0, len(frames), 32)]
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def _score(reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    cosine = float((reference[1] * candidate[1]).sum(axis=1).mean())
    mse = np.mean((reference[0].astype(np.float64) - candidate[0].astype(np.float64)) ** 2)
    return cosine, float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def rank_layers(checkpoint: str | Path, int8_model: str | Path, image_folders: list[str], out_txt: str | Path,
                top: int = 5, calib_num: int = 128, eval_num: int = 64) -> list[LayerScore]:
    import onnx
    from tqdm import tqdm

    from fogreid.calibration.images import build_calibration_set
    from fogreid.calibration.qdq import nodes_to_quantize, quantize_qdq
    from fogreid.calibration.ranges import compute_ranges
    from fogreid.onnx_graph import deploy_metadata, export_onnx, read_metadata
    from fogreid.fileio import atomic_write
    from fogreid.model.fused import FusedDefogReID

    int8_model = Path(int8_model)
    if int8_model.suffix != ".onnx" or read_metadata(int8_model).get("precision") != "int8":
        raise FogreidError(f"--per-layer ranks the layers of an INT8 ONNX (model_int8.onnx); {int8_model} is not one")
    if not image_folders:
        raise FogreidError("--per-layer needs foggy calibration images: --per-layer-images DIR (or --images DIR)")
    method = read_metadata(int8_model).get("calibration_method", "minmax")
    model = FusedDefogReID.from_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory(prefix="fogreid-per-layer-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "model.onnx", deploy_metadata(model.net, "", "fp32"))
        calib = build_calibration_set(image_folders, model.input_size, num=calib_num + eval_num, progress=False)
        frames = calib.images[calib_num:] if len(calib.images) > calib_num else calib.images
        calib.images = calib.images[:calib_num]
        ranges = compute_ranges(fp32, calib, method)
        reference = _outputs(fp32, frames)
        baseline = _score(reference, _outputs(quantize_qdq(fp32, Path(tmp) / "all.onnx", ranges, method), frames))
        candidates = [n for n in nodes_to_quantize(onnx.load(str(fp32)), [])
                      if n.endswith(("/Conv", "/ConvTranspose", "/Gemm", "/MatMul")) or "/Conv_" in n]
        scores = []
        error = max(1 - baseline[0], 1e-9)
        for node in tqdm(candidates, desc="per-layer", unit="layer"):
            trial = quantize_qdq(fp32, Path(tmp) / "trial.onnx", ranges, method, only=[node])
            cosine, psnr_db = _score(reference, _outputs(trial, frames))
            scores.append(LayerScore(node, cosine, psnr_db, (1 - cosine) / error))
        scores.sort(key=lambda s: (s.cosine_mean, s.psnr_db))
        keep, kept = [], baseline
        for candidate in tqdm(scores[:top * 3], desc="choosing", unit="build"):
            trial = _score(reference, _outputs(
                quantize_qdq(fp32, Path(tmp) / "kept.onnx", ranges, method, keep + [candidate.node]), frames))
            if trial[0] > kept[0]:
                keep, kept = keep + [candidate.node], trial
            if len(keep) == top:
                break
    print(f"\nall layers INT8: embedding cosine {baseline[0]:.4f}, defog PSNR {baseline[1]:.1f} dB "
          f"(vs FP32 ONNX, {len(frames)} frames). Quantising one layer alone:")
    print(f"{'layer':<48}{'cosine':>9}{'PSNR dB':>9}{'share of error':>16}")
    for s in scores[:max(top * 2, 10)]:
        print(f"{s.node:<48}{s.cosine_mean:>9.4f}{s.psnr_db:>9.1f}{100 * s.share:>15.1f}%")
    print(f"keeping {len(keep)} layers in float ({', '.join(keep) or 'none helped'}): embedding cosine "
          f"{kept[0]:.4f}, defog PSNR {kept[1]:.1f} dB")
    with atomic_write(out_txt, "w") as handle:
        handle.write(f"# layers to keep in float, from fogreid validate --per-layer on {int8_model.name}\n"
                     + "\n".join(keep) + "\n")
    print(f"wrote {out_txt}: fogreid export --checkpoint {checkpoint} --format onnx-int8 --keep-fp @{out_txt} ...")
    return scores
