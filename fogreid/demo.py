"""`fogreid demo`: the whole product on generated data, from nothing to a report.

  data      generate the default foggy dataset (FVRID layout)
  train     a small SJDL model (edge preset at 64 px)
  frames    a whole-frame defog head trained on whole generated camera frames (`fogreid train
            --mode frames`; the crop graph and embedding unchanged): what the whole-frame view shows
  export    ONNX FP32 and Q/DQ INT8 (and TensorRT engines where TensorRT is installed)
  validate  each artifact against the PyTorch model
  accuracy  mAP / Rank-1 / CMC of the model and of each artifact, syn and real-like
  speed     images/s of PyTorch and each artifact
  baseline  a ReID-only model trained the same way (the same data, size, epochs and seed), as ONNX
  stream    a generated 3-camera city (clear, light and dense fog) through `fogreid run`: public
            detections, ByteTrack, track-level ReID, global ids across cameras and the whole-frame
            defog view, for the SJDL model and the ReID-only one on the same frames, scored by
            `fogreid eval-mtmc` (vehicles the models never trained on; fogreid/demo_city.py)
  report    DIR/report.html and DIR/summary.json

Each step's result is kept under DIR/.steps with a key of its settings and of the results it
depends on: a re-run reuses finished steps, and a change of settings redoes what depends on it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fogreid.data.synth import SynthConfig


@dataclass(frozen=True)
class DemoSettings:
    data: SynthConfig
    imgsz: int = 64
    epochs: int = 40
    quick: bool = False      # a smaller city too
    calib_num: int = 256
    seed: int = 0


def demo_settings(quick: bool, seed: int = 0) -> DemoSettings:
    if quick:
        return DemoSettings(SynthConfig(ids=60, cams=4, seed=seed), epochs=10, quick=True, calib_num=64, seed=seed)
    return DemoSettings(SynthConfig(seed=seed), seed=seed)


def ensure_dataset(root: Path, cfg: SynthConfig) -> None:
    """Generate the dataset unless `root` already holds one made with the same settings."""
    from fogreid.data.synth import generate

    manifest = root / "fogreid_synth.json"
    complete = all((root / part).is_dir() for part in ("FVRID_syn", "FVRID_real", "FVRID_clear",
                                                       "FVRID_real/query_clear_eval"))
    if complete and manifest.is_file() and json.loads(manifest.read_text()).get("config") == asdict(cfg):
        print(f"[data] reusing {root} (same settings)")
        return
    print(f"[data] generating the default foggy dataset in {root}")
    generate(root, cfg)


class Steps:
    """Runs a step unless its recorded key (settings + upstream keys) and outputs are still there."""

    def __init__(self, out: Path) -> None:
        self.dir = out / ".steps"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}   # seconds each step took when it last ran
        self.reused: list[str] = []            # steps this run took from an earlier one

    def run(self, name: str, key: dict, func, outputs: list[Path] = ()) -> dict:
        from fogreid import __version__

        # The version too: another fogreid may compute a step differently.
        digest = hashlib.sha256(json.dumps({"fogreid": __version__, **key}, sort_keys=True,
                                           default=str).encode()).hexdigest()
        record = self.dir / f"{name}.json"
        if record.is_file():
            saved = json.loads(record.read_text())
            if saved["key"] == digest and all(Path(p).exists() for p in outputs):
                print(f"[{name}] up to date, reusing")
                self.timings[name] = saved.get("seconds", 0.0)
                self.reused.append(name)
                return saved["result"] | {"key": digest}
        print(f"[{name}] running")
        tic = time.perf_counter()
        result = func()
        self.timings[name] = round(time.perf_counter() - tic, 1)
        record.write_text(json.dumps({"key": digest, "seconds": self.timings[name], "result": result}, indent=2,
                                     default=str))
        return result | {"key": digest}


def train_settings(cfg: DemoSettings, data: Path, mode: str) -> list[str]:
    """The demo's schedule: lr 1e-3 from scratch, warm-up a tenth of the run, one decay at 2/3."""
    return [f"data.root={data}", f"model.imgsz=[{cfg.imgsz}, {cfg.imgsz}]", f"optim.epochs={cfg.epochs}",
            "optim.lr=1e-3", f"optim.warmup_epochs={max(cfg.epochs // 10, 1)}",
            f"optim.milestones=[{cfg.epochs * 2 // 3}]", "optim.gamma=0.1", f"seed={cfg.seed}", f"mode={mode}"]


def frames_settings(cfg: DemoSettings, data: Path) -> list[str]:
    """`--mode frames` at the demo's scale: 60 epochs of its data (480 steps of 36 crops and 2
    frames), lr 1e-4 with one decay near the end (the paper schedule's seven decays had taken the
    lr to 3 % of its peak by the end of a 40-epoch run: whole synthetic frames SSIM 0.933 against
    0.948 at a constant 1e-4 for 600 steps); quick, 2 epochs on fewer, smaller frames."""
    epochs = 2 if cfg.quick else 60
    quick = ["data.frame_cameras=8", "data.frames_per_camera=2", "data.frame_size=[240, 320]"] if cfg.quick else []
    return [f"data.root={data}", "mode=frames", f"optim.epochs={epochs}", f"optim.warmup_epochs={max(epochs // 20, 1)}",
            f"optim.milestones=[{max(epochs * 5 // 6, 1)}]", "optim.gamma=0.1", f"seed={cfg.seed}", *quick]


def validate_artifacts(ckpt: Path, artifacts: dict[str, Path], data: Path, out: Path) -> dict:
    """Every artifact on every installed engine that reads it, against the checkpoint: the file
    must mean the same thing to each, not only to ONNX Runtime. Rows are named artifact or
    artifact@engine."""
    from fogreid.validate.compare import candidates, validate_many
    from fogreid.validate.report import cross_engine_table, write_html, write_json

    verdicts = {}
    for name, path in artifacts.items():
        results = validate_many(ckpt, candidates([path]), data_root=str(data))
        write_html(results, out / "validation" / f"{name}.html")
        for result in results:
            key = row_name(name, result.backend)
            write_json(result, out / "validation" / f"{key}.json")
            verdicts[key] = result.to_json() | {"html": f"{name}.html", "engine": result.backend}
            print(f"[validate] {name} on {result.backend}: {'PASS' if result.passed else 'FAIL'}" + "".join(
                f"; {c.describe()}" for c in result.checks if not c.passed))
        if len(results) > 1:
            print(cross_engine_table(results))
    return {"verdicts": verdicts}


def train_frame_head(cfg: DemoSettings, data: Path, init: Path, folder: Path) -> dict:
    """The demo model with its whole-frame head (`fogreid train --mode frames`) in `folder`."""
    from fogreid.fileio import sha256_file
    from fogreid.train.config import build_config
    from fogreid.train.frames import train_frames

    summary = train_frames(build_config(None, frames_settings(cfg, data)), folder, init)
    return {"checkpoint": str(folder / "best.pt"), "sha256": sha256_file(folder / "best.pt"), "test": summary["test"],
            "frames": summary["frames"]}


def train_baseline(cfg: DemoSettings, data: Path, folder: Path) -> dict:
    """A ReID-only model trained exactly as the demo's SJDL model, as ONNX: what the stream compares with."""
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats
    from fogreid.train.config import build_config
    from fogreid.train.loop import train

    summary = train(build_config(None, train_settings(cfg, data, "reid")), folder)
    result = export(folder / "best.pt", parse_formats("onnx"), folder / "export", ExportOptions(progress=False))
    return {"onnx": str(result.files["onnx"]), "test": summary["test"]}


def accuracy_summary(scores: dict) -> dict:
    """summary.json's accuracy: the headline figures of each model and split (no CMC curve)."""
    return {k: {s: {m: v[s][m] for m in ("mAP", "rank1", "rank5", "num_queries")} | (
        {"psnr": v[s]["psnr"], "ssim": v[s]["ssim"]} if "psnr" in v[s] else {}) for s in v}
        for k, v in scores.items()}


def run_demo(out: str | Path, quick: bool = False, checkpoint: str | None = None, seed: int = 0) -> dict:
    from fogreid.tensorrt_version import installed_tensorrt

    out = Path(out)
    cfg = demo_settings(quick, seed)
    steps = Steps(out)
    data = out / "data"

    def make_data():
        ensure_dataset(data, cfg.data)
        return {"root": str(data)}
    data_step = steps.run("data", asdict(cfg.data), make_data, [data / "fogreid_synth.json"])

    def do_train():
        from fogreid.fileio import sha256_file
        from fogreid.train.config import build_config
        from fogreid.train.loop import train

        summary = train(build_config(None, train_settings(cfg, data, "sjdl")), out / "train")
        return {"checkpoint": str(out / "train" / "best.pt"), "sha256": sha256_file(out / "train" / "best.pt"),
                "test": summary["test"]}
    if checkpoint:
        from fogreid.fileio import sha256_file

        trained = {"checkpoint": str(checkpoint), "sha256": sha256_file(checkpoint), "key": sha256_file(checkpoint)}
    else:
        # The defog head's design and prior are in the key: another's checkpoint would not load or not fit.
        trained = steps.run("train", {"data": data_step["key"], "imgsz": cfg.imgsz, "epochs": cfg.epochs,
                                      "seed": cfg.seed, "defog_head": "detail", "prior": "box-mean"}, do_train,
                            [out / "train" / "best.pt"])
    from fogreid.export.frame_graph import frame_graph_rules

    if not checkpoint:   # the whole-frame head; a user's checkpoint is used as it is
        from fogreid.train.config import build_config, config_dict

        # The whole resolved config (a changed default retrains) and the frame graph's rules it trains through.
        tuned = steps.run("frames", {"model": trained["key"], "graph": frame_graph_rules(),
                                     "config": config_dict(build_config(None, frames_settings(cfg, Path("DATA"))))},
                          lambda: train_frame_head(cfg, data, Path(trained["checkpoint"]), out / "frames"),
                          [out / "frames" / "best.pt"])
        trained = tuned | {"train_test": trained.get("test")}
    ckpt = Path(trained["checkpoint"])

    with_trt = installed_tensorrt() is not None
    formats = "onnx,onnx-int8" + (",engine-fp16,engine-int8" if with_trt else "")

    def do_export():
        from fogreid.export.exporter import ExportOptions, export
        from fogreid.export.formats import parse_formats

        calib = [str(data / "FVRID_syn" / "train_foggy"), str(data / "FVRID_real" / "train_foggy")]
        result = export(ckpt, parse_formats(formats), out / "export",
                        ExportOptions(calib_images=calib, calib_num=cfg.calib_num, data_root=str(data)))
        return {"files": {k: str(v) for k, v in result.files.items()}, "not_built": result.not_built}
    exported = steps.run("export", {"model": trained["key"], "formats": formats, "calib": cfg.calib_num,
                                    "frame_graph": frame_graph_rules()}, do_export,
                         [out / "export" / "model.onnx"])
    artifacts = {name: Path(path) for name, path in exported["files"].items()
                 if name in ("onnx", "onnx-int8", "engine-fp16", "engine-int8")}

    validation = steps.run("validate", {"export": exported["key"]},
                           lambda: validate_artifacts(ckpt, artifacts, data, out))

    def do_accuracy():
        from fogreid.data.datasets import load_fvrid
        from fogreid.runtime.backends import engines_for, load_deployed
        from fogreid.train.evaluation import evaluate

        # Each artifact on each installed engine (ONNX files on OpenVINO too), both splits.
        runs = {"pytorch": (ckpt, "auto")}
        for name, path in artifacts.items():
            for engine in engines_for(path):
                runs[row_name(name, engine)] = (path, engine)
        scores = {}
        for name, (path, engine) in runs.items():
            with load_deployed(path, backend=engine) as model:
                scores[name] = {split: evaluate(model, load_fvrid(data, split), progress=False, desc=name)
                                for split in ("syn", "real")}
            print(f"[accuracy] {name}: syn mAP {100 * scores[name]['syn']['mAP']:.1f}, real mAP "
                  f"{100 * scores[name]['real']['mAP']:.1f}")
        return {"scores": scores}
    accuracy = steps.run("accuracy", {"export": exported["key"]}, do_accuracy)

    def do_speed():
        return {"speed": _speed({"pytorch": ckpt, **artifacts}, *((2, 0.2) if cfg.quick else (5, 0.5)))}
    speed = steps.run("speed", {"export": exported["key"]}, do_speed)

    # Not beside a user's --checkpoint, whose training settings the demo does not know.
    baseline = None if checkpoint else steps.run(
        "baseline", {"data": data_step["key"], "imgsz": cfg.imgsz, "epochs": cfg.epochs, "seed": cfg.seed},
        lambda: train_baseline(cfg, data, out / "baseline"), [out / "baseline" / "export" / "model.onnx"])

    def do_stream():
        from fogreid.demo_city import city_config, run_city

        models = {"sjdl": artifacts["onnx"]} | ({"reid_only": Path(baseline["onnx"])} if baseline else {})
        return run_city(out / "stream", city_config(cfg.quick, cfg.seed), models)
    stream = steps.run("stream", {"export": exported["key"], "baseline": baseline and baseline["key"],
                                  "quick": cfg.quick}, do_stream, [out / "stream" / "sjdl" / "events.jsonl"])

    from fogreid.demo_report import write_report

    summary = {"settings": asdict(cfg), "checkpoint": str(ckpt), "artifacts": {k: str(v) for k, v in artifacts.items()},
               "not_built": exported.get("not_built", {}),
               "training_test": trained.get("train_test", trained.get("test")), "frames_tuning": trained.get("frames"),
               "validation": {k: {"verdict": v["verdict"], "figures": v["figures"]}
                              for k, v in validation["verdicts"].items()},
               "accuracy": accuracy_summary(accuracy["scores"]),
               "baseline": baseline and {"checkpoint": str(out / "baseline" / "best.pt"), "test": baseline["test"]},
               "speed": speed["speed"], "stream": {k: v for k, v in stream.items() if k != "key"},
               "step_seconds": steps.timings, "reused_steps": steps.reused}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    write_report(out, summary, accuracy["scores"], validation["verdicts"])
    print(f"[done] {out / 'report.html'} (open it in a browser); figures in {out / 'summary.json'}")
    return summary


def _speed(models: dict[str, Path], rounds: int = 5, seconds: float = 0.5) -> dict:
    """Images/s of each model at batch 1 and 8: the median over `rounds` rounds, each timing every
    model in turn, so that a slow moment of a shared machine falls on all of them alike (timed one
    after the other, 1.5 s each, INT8 over FP32 at batch 8 read 1.17x in one run and 1.46x in the
    next on the same files). Each model is loaded once per batch, as a deployment loads it for its
    batch: `--backend auto` measures the CPU engines at it and OpenVINO compiles for it
    (fogreid.runtime.backends); the engine that ran is recorded beside the figure."""
    from contextlib import ExitStack

    import numpy as np

    from fogreid.runtime.backends import load_deployed
    from fogreid.runtime.bench import measure

    batches = (1, 8)
    with ExitStack() as stack:
        loaded = {(name, b): stack.enter_context(load_deployed(path, batch=b))
                  for name, path in models.items() for b in batches}
        frames = {key: np.random.default_rng(0).integers(0, 256, (key[1], *model.imgsz, 3), dtype=np.uint8)
                  for key, model in loaded.items()}
        timed = {key: [] for key in loaded}
        for _ in range(rounds):
            for key, per_round in timed.items():
                per_round.append(measure(loaded[key], frames[key], seconds, warmup=1).images_per_s)
        speed = {name: {} for name in models}
        for (name, b), model in loaded.items():
            speed[name][f"batch{b}"] = round(float(np.median(timed[name, b])), 1)
            speed[name][f"engine{b}"] = model.name.split(":")[0]
    for name, path in models.items():
        print(f"[speed] {Path(path).name}: {speed[name]['batch1']} img/s at batch 1 ({speed[name]['engine1']}), "
              f"{speed[name]['batch8']} at batch 8 ({speed[name]['engine8']}; median of {rounds} interleaved rounds)")
    return speed


def row_name(artifact: str, engine: str) -> str:
    """The demo's name for an artifact on an engine: the artifact's own on its default engine
    (ONNX Runtime for .onnx, TensorRT for engines), artifact@engine on another (onnx-int8@openvino)."""
    return artifact if engine in ("onnxruntime", "tensorrt") else f"{artifact}@{engine}"
