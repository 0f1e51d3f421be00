"""INT8 mixed precision: which layers must stay in float for the embedding to hold?

Per-layer sensitivity: for each quantisable layer of the network body, a model with only
that layer quantised (same activation ranges as the full INT8 build) is compared with the
FP32 graph on held-out foggy frames. Q/DQ effects do not add up (shared tensors, residual
additions), so layers are then kept in float greedily, most sensitive first, each step a
real build that is measured again:

  choose_float_layers   until the embedding cosine's 1st percentile reaches a budget
                        (`fogreid export --int8-budget`, on by default)
  rank_layers           the `fogreid validate --per-layer` report: the ranking, and the few
                        layers whose float build helps most (for `--keep-fp @FILE`)

Measured on held-out *calibration* frames only (never the test query/gallery), so the
choice is leak-free like the calibration itself.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fogreid.errors import FogreidError
from fogreid.sessions import onnxruntime_session


@dataclass
class LayerScore:
    node: str
    cosine_mean: float       # embedding cosine vs FP32 with only this layer quantised
    cosine_p1: float
    psnr_db: float
    share: float             # its embedding error, as a fraction of the all-INT8 error


@dataclass
class BudgetResult:
    budget: float                        # required 1st-percentile embedding cosine vs FP32
    keep_fp: list[str]                   # layers left in float, most sensitive first
    cosine_p1: float                     # reached with them (held-out calibration frames)
    all_int8_cosine_p1: float
    quantised_layers: int                # of the body's quantisable layers, after keep_fp
    body_layers: int
    frames: int
    steps: list[dict] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return self.cosine_p1 >= self.budget

    def metadata(self) -> dict[str, str]:
        return {"int8_budget_cosine_p1": f"{self.budget:g}", "int8_budget_reached": f"{self.cosine_p1:.4f}",
                "int8_keep_fp": ",".join(self.keep_fp)}


def _outputs(path: Path, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = onnxruntime_session(path, "cpu")
    results = [session.run(None, {"frames": frames[i:i + 32]}) for i in range(0, len(frames), 32)]
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def _score(reference: tuple[np.ndarray, np.ndarray],
           candidate: tuple[np.ndarray, np.ndarray]) -> tuple[float, float, float]:
    """(mean cosine, 1st-percentile cosine, defog PSNR) of `candidate` against `reference`."""
    cosine = (reference[1] * candidate[1]).sum(axis=1)     # both L2-normalised
    mse = np.mean((reference[0].astype(np.float64) - candidate[0].astype(np.float64)) ** 2)
    return float(cosine.mean()), float(np.percentile(cosine, 1)), float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def _candidates(fp32: Path, embedding_only: bool = False) -> list[str]:
    """The quantisable layers; with `embedding_only`, just those the embedding depends on
    (the defog decoder cannot change it, so the budget search never spends builds on it)."""
    import onnx

    from fogreid.calibration.qdq import nodes_to_quantize

    proto = onnx.load(str(fp32), load_external_data=False)
    names = nodes_to_quantize(proto, [])
    if not embedding_only:
        return names
    producer = {out: node for node in proto.graph.node for out in node.output}
    upstream, todo = set(), ["embedding"]
    while todo:
        node = producer.get(todo.pop())
        if node is not None and node.name not in upstream:
            upstream.add(node.name)
            todo.extend(node.input)
    return [n for n in names if n in upstream]


def layer_sensitivity(fp32: Path, ranges, method: str, frames: np.ndarray, work: Path, progress: bool = True,
                      embedding_only: bool = False) -> tuple[list[LayerScore], tuple[float, float, float]]:
    """Every quantisable layer scored alone, most sensitive first; and the all-INT8 score."""
    from tqdm import tqdm

    from fogreid.calibration.qdq import quantize_qdq

    reference = _outputs(fp32, frames)
    baseline = _score(reference, _outputs(quantize_qdq(fp32, work / "all.onnx", ranges, method, check=False), frames))
    error = max(1 - baseline[0], 1e-9)
    scores = []
    for node in tqdm(_candidates(fp32, embedding_only), desc="per-layer sensitivity", unit="layer",
                     disable=not progress):
        mean, p1, psnr_db = _score(reference, _outputs(
            quantize_qdq(fp32, work / "trial.onnx", ranges, method, only=[node], check=False), frames))
        scores.append(LayerScore(node, mean, p1, psnr_db, (1 - mean) / error))
    scores.sort(key=lambda s: (s.cosine_mean, s.psnr_db))
    return scores, baseline


def choose_float_layers(fp32: str | Path, ranges, method: str, frames: np.ndarray, budget: float,
                        keep_fp: list[str] = (), progress: bool = True) -> BudgetResult:
    """The fewest layers to keep in float, most sensitive first, so that the embedding cosine
    vs FP32 has its 1st percentile >= `budget` on `frames` (held-out calibration frames).
    Only layers the embedding depends on are candidates. The cosine grows (nearly)
    monotonically with the number of layers kept, so the shortest prefix of the sensitivity
    order that meets the budget is found by bisection, every probe a real build."""
    from fogreid.calibration.qdq import quantize_qdq

    fp32 = Path(fp32)
    if not 0 < budget <= 1:
        raise FogreidError(f"--int8-budget {budget}: give the embedding cosine to hold, in (0, 1], e.g. 0.99")
    body = _candidates(fp32)
    with tempfile.TemporaryDirectory(prefix="fogreid-budget-") as tmp:
        work = Path(tmp)
        reference = _outputs(fp32, frames)
        base = list(keep_fp)
        steps: list[dict] = []

        def build(extra: list[str]) -> float:
            model = quantize_qdq(fp32, work / "q.onnx", ranges, method, base + extra, check=False)
            p1 = _score(reference, _outputs(model, frames))[1]
            steps.append({"float_layers": len(base + extra), "cosine_p1": round(p1, 5)})
            if progress:
                print(f"  {len(base + extra):3d} layers in float: embedding cosine p1 {p1:.4f}")
            return p1

        all_int8 = reached = build([])
        keep: list[str] = []
        if all_int8 < budget:
            scores, _ = layer_sensitivity(fp32, ranges, method, frames, work, progress, embedding_only=True)
            order = [s.node for s in scores if s.node not in base]
            low, high = 0, len(order)            # prefix `low` misses the budget; `high` meets it (or is all)
            high_p1 = build(order)
            while high - low > 1 and high_p1 >= budget:
                mid = (low + high) // 2
                p1 = build(order[:mid])
                if p1 >= budget:
                    high, high_p1 = mid, p1
                else:
                    low = mid
            keep, reached = order[:high], high_p1
    return BudgetResult(budget, base + keep, reached, all_int8, len([n for n in body if n not in base + keep]),
                        len(body), len(frames), steps)


def rank_layers(checkpoint: str | Path, int8_model: str | Path, image_folders: list[str], out_txt: str | Path,
                top: int = 5, calib_num: int = 128, eval_num: int = 64) -> list[LayerScore]:
    from tqdm import tqdm

    from fogreid.calibration.images import build_calibration_set
    from fogreid.calibration.qdq import quantize_qdq
    from fogreid.calibration.ranges import compute_ranges
    from fogreid.fileio import atomic_write
    from fogreid.model.fused import FusedDefogReID
    from fogreid.onnx_graph import deploy_metadata, export_onnx, read_metadata

    int8_model = Path(int8_model)
    if int8_model.suffix != ".onnx" or read_metadata(int8_model).get("precision") != "int8":
        raise FogreidError(f"--per-layer ranks the layers of an INT8 ONNX (model_int8.onnx); {int8_model} is not one")
    if not image_folders:
        raise FogreidError("--per-layer needs foggy calibration images: --per-layer-images DIR (or --images DIR)")
    method = read_metadata(int8_model).get("calibration_method", "minmax")
    model = FusedDefogReID.from_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory(prefix="fogreid-per-layer-") as tmp:
        work = Path(tmp)
        fp32 = export_onnx(model, work / "model.onnx", deploy_metadata(model.net, "", "fp32"))
        calib = build_calibration_set(image_folders, model.imgsz, num=calib_num + eval_num, progress=False)
        frames = calib.images[calib_num:] if len(calib.images) > calib_num else calib.images
        calib.images = calib.images[:calib_num]
        ranges = compute_ranges(fp32, calib, method)
        reference = _outputs(fp32, frames)
        scores, baseline = layer_sensitivity(fp32, ranges, method, frames, work)
        keep, kept = [], baseline
        for candidate in tqdm(scores[:top * 3], desc="choosing", unit="build"):
            trial = _score(reference, _outputs(
                quantize_qdq(fp32, work / "kept.onnx", ranges, method, keep + [candidate.node], check=False), frames))
            if trial[0] > kept[0]:
                keep, kept = keep + [candidate.node], trial
            if len(keep) == top:
                break
    print(f"\nall layers INT8: embedding cosine {baseline[0]:.4f} (p1 {baseline[1]:.4f}), defog PSNR "
          f"{baseline[2]:.1f} dB (vs FP32 ONNX, {len(frames)} frames). Quantising one layer alone:")
    print(f"{'layer':<48}{'cosine':>9}{'p1':>9}{'PSNR dB':>9}{'share of error':>16}")
    for s in scores[:max(top * 2, 10)]:
        print(f"{s.node:<48}{s.cosine_mean:>9.4f}{s.cosine_p1:>9.4f}{s.psnr_db:>9.1f}{100 * s.share:>15.1f}%")
    print(f"keeping {len(keep)} layers in float ({', '.join(keep) or 'none helped'}): embedding cosine "
          f"{kept[0]:.4f} (p1 {kept[1]:.4f}), defog PSNR {kept[2]:.1f} dB")
    with atomic_write(out_txt, "w") as handle:
        handle.write(f"# layers to keep in float, from fogreid validate --per-layer on {int8_model.name}\n"
                     + "\n".join(keep) + "\n")
    print(f"wrote {out_txt}: fogreid export --checkpoint {checkpoint} --format onnx-int8 --keep-fp @{out_txt} ...")
    return scores
