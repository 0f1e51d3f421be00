"""`fogreid validate`: the checkpoint (PyTorch) and an artifact (ONNX in any precision, or a
TensorRT engine) run on the same foggy frames through Polygraphy's Comparator, then:

  embedding   cosine per image (min, mean, 1st percentile) and the largest element difference
  retrieval   for each image, is its nearest neighbour in the set the same under both models?
              (a neighbour within 0.001 cosine of the nearest counts as the same: a tie)
  defog       PSNR / SSIM of the artifact's defogged frames against PyTorch's
  task        with a dataset: mAP and Rank-1 of both on its query/gallery split, and the delta

The whole-frame defog graph (metadata graph=defog-frame) has no embedding: it is judged on
camera-sized frames by fogreid/validate/frame.py.

Each figure has a threshold per precision (defaults below, overridable); the verdict fails
on any figure past its threshold and names it. With a labelled dataset, retrieval agreement
is judged by the mAP / Rank-1 drop itself; nearest-neighbour agreement, its proxy for
unlabelled images, is then reported but not judged (a weak model's neighbours flip among
equally wrong candidates without changing its accuracy).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from fogreid.config import ranged
from fogreid.errors import FogreidError


@dataclass
class Thresholds:
    cosine_min: float = ranged(low=-1, high=1)
    cosine_p1: float = ranged(low=-1, high=1)
    nn_agreement: float = ranged(low=0, high=1)     # fraction of images whose nearest neighbour is unchanged
    psnr_db: float = ranged(low=0, high=200)        # defogged frames vs PyTorch's
    map_drop: float = ranged(low=0, high=100)       # mAP points lost (0-100 scale), with --data
    rank1_drop: float = ranged(low=0, high=100)


DEFAULT_THRESHOLDS = {
    "fp32": Thresholds(cosine_min=0.9999, cosine_p1=0.9999, nn_agreement=0.99, psnr_db=45.0, map_drop=0.5,
                       rank1_drop=1.0),
    "fp16": Thresholds(cosine_min=0.999, cosine_p1=0.999, nn_agreement=0.97, psnr_db=35.0, map_drop=1.0,
                       rank1_drop=2.0),
    "int8": Thresholds(cosine_min=0.97, cosine_p1=0.98, nn_agreement=0.90, psnr_db=28.0, map_drop=2.0,
                       rank1_drop=4.0),
}


def parse_threshold(item: str) -> tuple[str, float]:
    """`NAME=VALUE` of `--threshold`, the value a finite number in NAME's range (a NaN threshold
    compares False with every figure: "needs >= nan")."""
    names = {f.name: f.metadata["range"] for f in fields(Thresholds)}
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or key not in names:
        raise FogreidError(f"--threshold {item!r}: expected NAME=VALUE with NAME one of {', '.join(names)}")
    try:
        value = float(raw)
    except ValueError:
        raise FogreidError(f"--threshold {item!r}: {raw!r} is not a number; {key} takes "
                           f"{names[key].describe()}") from None
    if value not in names[key]:
        raise FogreidError(f"--threshold {item}: out of range; {key} takes {names[key].describe()}")
    return key, value


def thresholds_for(precision: str, overrides: list[str] = ()) -> Thresholds:
    if precision not in DEFAULT_THRESHOLDS:
        raise FogreidError(f"--precision {precision}: choose fp32, fp16 or int8")
    values = asdict(DEFAULT_THRESHOLDS[precision])
    for item in overrides:
        key, value = parse_threshold(item)
        values[key] = value
    return Thresholds(**values)


@dataclass
class Check:
    figure: str
    value: float
    threshold: float
    higher_is_better: bool

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold

    def describe(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        return f"{self.figure} = {self.value:.4f} (needs {sign} {self.threshold:g})"


@dataclass
class ValidationResult:
    checkpoint: str
    artifact: str
    backend: str
    precision: str
    images: int
    figures: dict
    checks: list[Check]
    samples: dict = field(default_factory=dict)     # a few frames for the HTML report
    cosines: np.ndarray | None = None
    cmc: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_json(self) -> dict:
        return {"verdict": "pass" if self.passed else "fail", "checkpoint": self.checkpoint,
                "artifact": self.artifact, "backend": self.backend, "precision": self.precision,
                "images": self.images, "figures": self.figures,
                "checks": [{**asdict(c), "passed": c.passed} for c in self.checks],
                "cmc": {k: [float(x) for x in v] for k, v in self.cmc.items()}}


def artifact_precision(path: Path) -> str:
    """fp32/fp16/int8 from an ONNX file's metadata or an engine's sidecar JSON."""
    if path.suffix == ".onnx":
        from fogreid.onnx_graph import read_metadata

        return read_metadata(path).get("precision", "fp32")
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        return json.loads(sidecar.read_text()).get("precision", "fp16")
    return "fp32"


def check_same_model(checkpoint: Path, artifact: Path) -> None:
    """An artifact exported from another checkpoint cannot be validated against this one."""
    from fogreid.fileio import sha256_file

    if artifact.suffix != ".onnx":
        return
    from fogreid.onnx_graph import read_metadata

    recorded = read_metadata(artifact).get("checkpoint_sha256")
    if recorded and recorded != sha256_file(checkpoint):
        raise FogreidError(f"{artifact} was exported from another checkpoint than {checkpoint} (SHA-256 "
                           f"{recorded[:12]}... recorded in its metadata); validate it against that checkpoint, "
                           f"or re-export from this one")


def collect_frames(images: list[str] | None, data_root: str | None, size: tuple[int, int], limit: int):
    """(frames (N, H, W, 3) uint8, the dataset split or None). With a dataset: its synthetic
    foggy query + gallery (all of it: the task figures need the whole split)."""
    from fogreid.data.image_io import list_images, load_for_model

    if data_root:
        from fogreid.data.datasets import load_fvrid

        split = load_fvrid(data_root, "syn")
        paths = [r.path for r in split.query + split.gallery]
        return np.stack([load_for_model(p, size) for p in paths]), split
    if not images:
        raise FogreidError("give foggy images to validate on: --images DIR or --data ROOT")
    paths = [p for folder in images for p in list_images(folder)]
    rng = np.random.default_rng(0)
    if len(paths) > limit:
        paths = [paths[i] for i in sorted(rng.choice(len(paths), limit, replace=False))]
    if len(paths) < 2:
        raise FogreidError(f"only {len(paths)} image in {', '.join(images)}: validation needs at least 2")
    return np.stack([load_for_model(p, size) for p in paths]), None


def candidates(models: list[str | Path], backends: list[str] = ("auto",)) -> list[tuple[Path, str]]:
    """(artifact, engine) pairs to validate: each artifact on each named engine that reads it,
    or with `auto` on every installed engine that does (fogreid.runtime.backends.engines_for)."""
    from fogreid.runtime.backends import artifact_kind, engines_for

    pairs = []
    for model in map(Path, models):
        if "auto" in backends:
            engines = engines_for(model)
        else:
            readable = {"onnxruntime", "openvino"} if artifact_kind(model) == "onnxruntime" else {artifact_kind(model)}
            engines = [b for b in backends if b in readable]
            if not engines:
                raise FogreidError(f"--backend {' '.join(backends)}: none of these runs {model}; its engines are "
                                   f"{', '.join(sorted(readable))}")
        pairs += [(model, engine) for engine in engines]
    return pairs


def validate(checkpoint: str | Path, artifact: str | Path, images: list[str] | None = None,
             data_root: str | None = None, backend: str = "auto", precision: str | None = None,
             threshold_overrides: list[str] = (), limit: int = 256, batch_size: int = 16,
             device: str = "auto") -> ValidationResult:
    """One artifact on one engine against the checkpoint."""
    return validate_many(checkpoint, [(artifact, backend)], images, data_root, precision, threshold_overrides,
                         limit, batch_size, device)[0]


def validate_many(checkpoint: str | Path, candidates: list[tuple[str | Path, str]], images: list[str] | None = None,
                  data_root: str | None = None, precision: str | None = None, threshold_overrides: list[str] = (),
                  limit: int = 256, batch_size: int = 16, device: str = "auto") -> list[ValidationResult]:
    """Each (artifact, backend) against the checkpoint on the same frames: PyTorch runs once, then
    every candidate, and each is judged by the thresholds of its own precision."""
    from polygraphy.comparator import Comparator

    from fogreid.model.fused import FusedDefogReID
    from fogreid.runtime.backends import TorchRunner, artifact_kind, make_runner

    checkpoint = Path(checkpoint)
    reference_model = FusedDefogReID.from_checkpoint(checkpoint)
    runners = []
    for artifact, backend in candidates:
        artifact = Path(artifact)
        kind = artifact_kind(artifact, backend)
        if kind != "torch":
            check_same_model(checkpoint, artifact)
        candidate = make_runner(artifact, kind, device, batch=batch_size)   # OpenVINO compiles for it
        with candidate:
            shape = candidate.get_input_metadata(use_numpy_dtypes=False)["frames"].shape
        if (int(shape[1]), int(shape[2])) != reference_model.imgsz:
            raise FogreidError(f"{artifact} takes {shape[1]}x{shape[2]} frames but {checkpoint} is a "
                               f"{reference_model.imgsz[0]}x{reference_model.imgsz[1]} model: the artifact "
                               f"is for another model; export it from this checkpoint")
        limits = thresholds_for(precision or artifact_precision(artifact), threshold_overrides)
        runners.append((artifact, candidate, precision or artifact_precision(artifact), limits))
    frames, split = collect_frames(images, data_root, reference_model.imgsz, limit)
    loader = [{"frames": frames[i:i + batch_size]} for i in range(0, len(frames), batch_size)]
    reference = TorchRunner(reference_model, name="pytorch")
    # Polygraphy's Comparator runs the runners one after the other on the same batches.
    results = Comparator.run([reference] + [r[1] for r in runners], data_loader=loader)
    ref_emb, ref_img = _outputs(results[0][1])
    runner_results = [results[i + 1] for i in range(len(runners))]
    return [_judge(checkpoint, artifact, candidate.name.split(":")[0], precision, limits, frames, split,
                   ref_emb, ref_img, *_outputs(iters))
            for (artifact, candidate, precision, limits), (_, iters) in zip(runners, runner_results, strict=True)]


def _outputs(iterations) -> tuple[np.ndarray, np.ndarray]:
    embedding = np.concatenate([np.array(it["embedding"]) for it in iterations]).astype(np.float32)
    return embedding, np.concatenate([np.array(it["defogged"]) for it in iterations])


def _judge(checkpoint: Path, artifact: Path, backend: str, precision: str, limits: Thresholds, frames: np.ndarray,
           split, ref_emb: np.ndarray, ref_img: np.ndarray, art_emb: np.ndarray,
           art_img: np.ndarray) -> ValidationResult:
    import torch

    from fogreid.metrics import cosine_distance, evaluate_rank, psnr, ssim
    from fogreid.pixels import frames_to_images

    if art_emb.shape != ref_emb.shape:
        raise FogreidError(f"{artifact} gives {art_emb.shape[1]}-d embeddings, {checkpoint} {ref_emb.shape[1]}-d: "
                           f"the artifact is for another model")
    if not np.isfinite(art_emb).all():
        # A NaN cosine compares False with every threshold and would read as a plain fail with a
        # meaningless figure: name the cause instead.
        bad = int((~np.isfinite(art_emb).all(axis=1)).sum())
        raise FogreidError(f"{artifact} on {backend} gives non-finite embeddings for {bad} of {len(art_emb)} images: "
                           f"the artifact or the engine is broken; re-export it")
    cosine = (ref_emb * art_emb).sum(axis=1) / np.maximum(
        np.linalg.norm(ref_emb, axis=1) * np.linalg.norm(art_emb, axis=1), 1e-12)
    agreement, strict = _nn_agreement(ref_emb, art_emb)
    ref_t, art_t = frames_to_images(torch.from_numpy(ref_img)), frames_to_images(torch.from_numpy(art_img))
    defog_psnr = float(psnr(art_t, ref_t).clamp(max=100).mean())
    figures = {"cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
               "cosine_p1": float(np.percentile(cosine, 1)),
               "embedding_max_abs_diff": float(np.abs(ref_emb - art_emb).max()),
               "nn_agreement": agreement, "nn_agreement_strict": strict, "defog_psnr_db": defog_psnr,
               "defog_ssim": float(ssim(art_t, ref_t).mean()),
               "defog_max_grey_diff": int(np.abs(ref_img.astype(int) - art_img.astype(int)).max())}
    checks = [Check("cosine_min", figures["cosine_min"], limits.cosine_min, True),
              Check("cosine_p1", figures["cosine_p1"], limits.cosine_p1, True),
              Check("defog_psnr_db", defog_psnr, limits.psnr_db, True)]
    if split is None:
        checks.insert(2, Check("nn_agreement", figures["nn_agreement"], limits.nn_agreement, True))
    cmc = {}
    if split is not None:
        nq = len(split.query)
        args = ([r.pid for r in split.query], [r.pid for r in split.gallery],
                [r.camid for r in split.query], [r.camid for r in split.gallery])
        ref_rank = evaluate_rank(cosine_distance(ref_emb[:nq], ref_emb[nq:]), *args)
        art_rank = evaluate_rank(cosine_distance(art_emb[:nq], art_emb[nq:]), *args)
        figures.update({"map_pytorch": 100 * ref_rank.mAP, "map_artifact": 100 * art_rank.mAP,
                        "rank1_pytorch": 100 * ref_rank.rank(1), "rank1_artifact": 100 * art_rank.rank(1)})
        figures["map_drop"] = figures["map_pytorch"] - figures["map_artifact"]
        figures["rank1_drop"] = figures["rank1_pytorch"] - figures["rank1_artifact"]
        checks += [Check("map_drop", figures["map_drop"], limits.map_drop, False),
                   Check("rank1_drop", figures["rank1_drop"], limits.rank1_drop, False)]
        cmc = {"pytorch": ref_rank.cmc, "artifact": art_rank.cmc}
    picks = np.linspace(0, len(frames) - 1, min(4, len(frames))).astype(int)
    samples = {"foggy": frames[picks], "pytorch": ref_img[picks], "artifact": art_img[picks]}
    return ValidationResult(str(checkpoint), str(artifact), backend, precision, len(frames),
                            figures, checks, samples, cosine, cmc)


def _nn_agreement(reference: np.ndarray, artifact: np.ndarray, tie: float = 1e-3) -> tuple[float, float]:
    """(tie-aware, strict) fraction of images whose nearest neighbour in the set is unchanged."""
    def similarities(e):
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        sims = e @ e.T
        np.fill_diagonal(sims, -np.inf)
        return sims

    ref_sims = similarities(reference)
    ref_nn, art_nn = ref_sims.argmax(axis=1), similarities(artifact).argmax(axis=1)
    rows = np.arange(len(reference))
    tie_ok = ref_sims[rows, art_nn] >= ref_sims[rows, ref_nn] - tie
    return float(tie_ok.mean()), float((ref_nn == art_nn).mean())
