import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fogreid.data.synth import SynthConfig, generate
from fogreid.model.checkpoint import read_checkpoint

TINY_TRAIN = ["--imgsz", "64", "--ids-per-batch", "4", "--instances-per-id", "2", "--seed", "3",
              "--set", "data.num_workers=0", "--set", "optim.warmup_epochs=1", "--set", "optim.lr=3e-4",
              "--set", "data.real_every=2", "--quiet"]


@pytest.fixture(scope="module")
def train_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    generate(root, SynthConfig(ids=16, cams=3, per_cam=2, imgsz=64, seed=5), progress=False)
    return root


def run_train(fogreid_cmd, root, out, *extra, check=True):
    proc = subprocess.run(fogreid_cmd + ["train", "--data", str(root), "--out", str(out), *TINY_TRAIN, *extra],
                          capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def weights(path):
    return read_checkpoint(path)["model"]


def test_few_iterations_write_checkpoints_and_metrics(fogreid_cmd, train_root, tmp_path):
    out = tmp_path / "run"
    run_train(fogreid_cmd, train_root, out, "--epochs", "2")
    for name in ("last.pt", "best.pt", "metrics.json", "metrics.csv", "history.jsonl"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    last = read_checkpoint(out / "last.pt")
    assert last["epoch"] == 2 and last["step_in_epoch"] == 0 and last["global_step"] > 0
    assert last["meta"]["mode"] == "sjdl" and last["model_config"]["num_ids_real"] > 0
    best = read_checkpoint(out / "best.pt")  # deployment: weights, config, metadata; no optimiser state
    assert "optimizer" not in best and "rng" not in best and best["model"].keys() == last["model"].keys()
    assert (out / "best.pt").stat().st_size < 0.6 * (out / "last.pt").stat().st_size
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:  # every term of the SJDL objective took part
        for term in ("train/id", "train/triplet", "train/restore", "train/real_id", "train/dark_channel", "train/tv"):
            assert row[term] > 0, term
    test = metrics["test"]
    assert 0 < test["syn"]["mAP"] <= 1 and 0 < test["real"]["mAP"] <= 1
    # Precise BN ran before each validation; best.pt keeps the training (EMA) statistics it
    # replaced, and the test is also reported with them, to show the effect.
    assert all(row["precise_bn_batches"] > 0 for row in history)
    best_state = read_checkpoint(out / "best.pt")
    ema = best_state["bn_ema"]
    assert any(k.endswith("running_mean") and not torch.equal(ema[k], best_state["model"][k]) for k in ema)
    assert set(metrics["test_ema_bn"]) == {"syn", "real", "clear"}
    assert history[0]["lr_start"] < history[0]["lr"]  # warmup
    # The real-like split is scored against its eval-only clear renders (never used in training).
    assert test["syn"]["psnr"] > 5 and test["real"]["psnr"] > 5

    # The eval verb on the best checkpoint: JSON with retrieval and defog figures.
    proc = subprocess.run(fogreid_cmd + ["eval", "--checkpoint", str(out / "best.pt"), "--data", str(train_root),
                                         "--json"], capture_output=True, text=True, check=True)
    scores = json.loads(proc.stdout)
    assert scores["mAP"] == pytest.approx(test["syn"]["mAP"], abs=1e-6)
    assert {"rank1", "rank5", "rank10", "psnr", "ssim", "psnr_foggy"} <= set(scores)
    # The same test vehicles without fog: scored, and not the foggy split's figure.
    proc = subprocess.run(fogreid_cmd + ["eval", "--checkpoint", str(out / "best.pt"), "--data", str(train_root),
                                         "--split", "clear", "--json"], capture_output=True, text=True, check=True)
    clear = json.loads(proc.stdout)
    assert clear["mAP"] == pytest.approx(test["clear"]["mAP"], abs=1e-6) and clear["mAP"] != scores["mAP"]
    assert metrics["schedule"]["lr"] == pytest.approx(3e-4) and metrics["schedule"]["lr_source"] == "optim.lr"


def test_reid_mode_has_no_defog_head(fogreid_cmd, train_root, tmp_path):
    out = tmp_path / "reid"
    run_train(fogreid_cmd, train_root, out, "--epochs", "1", "--mode", "reid", "--set", "data.reid_input=clear")
    state = read_checkpoint(out / "last.pt")
    assert state["model_config"]["defog"] is False
    assert not any(k.startswith("decoder.") for k in state["model"])


def test_resume_after_sigkill_matches_an_uninterrupted_run(fogreid_cmd, train_root, tmp_path):
    straight = tmp_path / "straight"
    run_train(fogreid_cmd, train_root, straight, "--epochs", "2")

    killed = tmp_path / "killed"
    proc = subprocess.Popen(fogreid_cmd + ["train", "--data", str(train_root), "--out", str(killed), *TINY_TRAIN,
                                           "--epochs", "2", "--set", "save_every_steps=1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # kill mid-epoch 1, once a few steps are saved
            if (killed / "last.pt").exists():
                state = torch.load(killed / "last.pt", weights_only=True)
                if state["epoch"] == 0 and state["step_in_epoch"] >= 2:
                    break
            if proc.poll() is not None:
                pytest.fail("training ended before it could be killed mid-epoch")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    interrupted = read_checkpoint(killed / "last.pt")  # intact after SIGKILL: written atomically
    assert interrupted["epoch"] == 0 and interrupted["step_in_epoch"] >= 2

    run_train(fogreid_cmd, train_root, killed, "--epochs", "2", "--resume")
    a, b = weights(straight / "last.pt"), weights(killed / "last.pt")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs in {different[:5]}"


def test_resume_refuses_another_config(fogreid_cmd, train_root, tmp_path):
    out = tmp_path / "run"
    run_train(fogreid_cmd, train_root, out, "--epochs", "1")
    proc = run_train(fogreid_cmd, train_root, out, "--epochs", "2", "--backbone", "resnet34", "--resume", check=False)
    assert proc.returncode == 2 and "backbone: expected 'resnet34'" in proc.stderr


def test_ddp_gloo_two_processes(fogreid_cmd, train_root, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_train(fogreid_cmd, train_root, single, "--epochs", "1", "--mode", "jdl")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "fogreid", "train", "--data", str(train_root), "--out", str(ddp), *TINY_TRAIN,
                           "--epochs", "1", "--mode", "jdl", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps_single = read_checkpoint(single / "last.pt")["global_step"]
    steps_ddp = read_checkpoint(ddp / "last.pt")["global_step"]
    assert steps_ddp == steps_single // 2  # each of the 2 processes takes every other batch
    assert json.loads((ddp / "metrics.json").read_text())["test"]["syn"]["num_queries"] > 0


def test_precise_bn_changes_running_statistics_not_weights(train_root):
    from fogreid.data.datasets import ReIDImages, load_fvrid
    from fogreid.data.sampler import IdentitySampler
    from fogreid.model.build import build_model
    from fogreid.model.config import preset
    from fogreid.model.fused import Preprocess
    from fogreid.train.precise import bn_buffers, domain_batches, reestimate

    syn = load_fvrid(train_root, "syn")
    labels = syn.train_labels()
    dataset = ReIDImages(syn.train, (64, 64), labels)
    torch.manual_seed(0)
    net = build_model(preset("edge", imgsz=(64, 64), num_ids=len(set(labels))))
    with torch.no_grad():  # stale statistics, as after training: from other images
        net.train()(torch.rand(8, 3, 64, 64) * 0.2)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = domain_batches([(dataset, IdentitySampler(labels, 4, 2, seed=0), "image")])
    assert reestimate(net, batches, 3, Preprocess(), torch.device("cpu")) == 3
    assert not net.training  # the mode is restored
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    statistics = set(bn_buffers(net))
    assert changed <= statistics, sorted(changed - statistics)[:5]         # no weight moved
    assert {k for k in statistics if k.endswith(("running_mean", "running_var"))} <= changed
    # The same batches give the same statistics (a resumed run re-estimates identically).
    again = domain_batches([(dataset, IdentitySampler(labels, 4, 2, seed=0), "image")])
    reestimate(net, again, 3, Preprocess(), torch.device("cpu"))
    assert all(torch.equal(after[k], net.state_dict()[k]) for k in statistics)


def test_every_mode_runs_through_one_loop():
    """Issue 22: sjdl / jdl / reid and each RVSL stage are steps of the one loop, `fit`, and
    no function of fogreid/train is over 120 lines."""
    import ast
    import inspect
    from pathlib import Path

    from fogreid.train import loop, rvsl
    from fogreid.train.sjdl_step import SJDLStep
    from fogreid.train.step import Step

    long = [f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in Path(loop.__file__).parent.glob("*.py")
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 120]
    assert not long, long
    for entry in (loop.train, rvsl.train_stage):
        called = {n.func.id for n in ast.walk(ast.parse(inspect.getsource(entry)))
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "fit" in called, entry.__name__
    assert issubclass(SJDLStep, Step) and issubclass(rvsl.RVSLStep, Step)


def test_sensor_noise_reaches_the_foggy_image_only():
    """data.noise_sigma: signal-dependent noise on the synthetic foggy input, on uint8 levels, the
    same for the same step's generator (a resumed run draws it again), never on the clear target."""
    from fogreid.train.step import add_sensor_noise, paired_batch

    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8, generator=gen)
    items = {"image": frames, "clear": frames.clone(), "label": torch.arange(4)}

    def batch(sigma):
        return paired_batch(items, torch.Generator().manual_seed(7), 0.5, lambda x: x.permute(0, 3, 1, 2) / 255,
                            torch.device("cpu"), sigma)

    plain, noisy, again = batch(0.0), batch(0.04), batch(0.04)
    assert torch.equal(plain.foggy, plain.clear) and torch.equal(noisy.clear, plain.clear)
    assert torch.equal(noisy.foggy, again.foggy) and not torch.equal(noisy.foggy, plain.foggy)
    assert torch.equal(noisy.foggy * 255, (noisy.foggy * 255).round())
    diff = (noisy.foggy - plain.foggy).abs()
    assert 0 < diff.mean() < 0.04 and noisy.foggy.min() >= 0 and noisy.foggy.max() <= 1
    flat = torch.full((64, 3, 16, 16), 0.5)
    spread = (add_sensor_noise(flat, 0.04, torch.Generator().manual_seed(1)) - flat).flatten(1).std(dim=1)
    assert spread.max() < 0.04 * 0.5 ** 0.5 + 0.01 and spread.min() < 0.01   # sigma drawn per image in [0, max]


def test_losses_are_computed_in_fp32_under_fp16_autocast():
    """Mixed precision runs the network in FP16, never the losses: SSIM on a flat patch (a sky,
    a grey car) cancels E[x^2] - E[x]^2 in FP16 and came out 0.128 instead of 0.000 on this
    batch, with gradient errors 25 times the gradient itself (the first CUDA runs trained on them)."""
    from fogreid.train import losses as L

    gen = torch.Generator().manual_seed(0)
    clear = torch.full((4, 3, 32, 32), 0.7)
    clear[:, :, 16:] = torch.rand(4, 3, 16, 32, generator=gen)
    output = clear.clone()
    output[:, :, :16] = 0.69

    def loss_and_grad(fn, amp):
        x = output.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.float16, enabled=amp):
            loss = fn(x * 1.0)
        loss.backward()
        return loss.detach(), x.grad

    for fn in (lambda x: L.ssim_loss(x, clear), lambda x: L.restoration(x, clear), L.total_variation,
               lambda x: L.dark_channel_loss(x, 7)):
        (loss32, grad32), (loss16, grad16) = loss_and_grad(fn, False), loss_and_grad(fn, True)
        assert loss16.dtype == torch.float32 and torch.equal(loss16, loss32) and torch.equal(grad16, grad32)


def test_mixed_precision_training_steps_are_applied_and_counted(fogreid_cmd, train_root, tmp_path):
    """amp=fp16 (CUDA's default, forced here on the CPU): the steps are applied (at most the
    GradScaler's first back-off skipped), each epoch's skipped steps are in the history, and a
    run whose gradients overflow even unscaled stops with a message instead of skipping every
    later step and saving an untrained model."""
    from fogreid.errors import FogreidError
    from fogreid.train.loop import check_amp_scale

    out = tmp_path / "amp"
    run_train(fogreid_cmd, train_root, out, "--epochs", "3", "--set", "amp=fp16")
    history = json.loads((out / "metrics.json").read_text())["history"]
    steps = read_checkpoint(out / "last.pt")["global_step"]
    skipped = [row["amp_skipped_steps"] for row in history]
    assert sum(skipped) <= 4 < steps and skipped[-1] == 0, (skipped, steps)   # the scale found, then none
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["syn"]["psnr"] > 12 and test["real"]["psnr"] > 12    # a defog head, not a black image
    with pytest.raises(FogreidError, match="epoch 3, step 7: the gradients are inf or NaN in FP16 even unscaled"):
        check_amp_scale(0.5, 2, 7)
    check_amp_scale(1.0, 2, 7)
    proc = run_train(fogreid_cmd, train_root, tmp_path / "rvsl", "--mode", "rvsl", "--set", "amp=fp16", check=False)
    assert proc.returncode == 2 and "amp=fp16: RVSL trains in FP32" in proc.stderr


def test_a_run_saved_without_mixed_precision_resumes_with_it(fogreid_cmd, train_root, tmp_path):
    """A last.pt written by an FP32 run holds an empty GradScaler state, which an enabled
    GradScaler refuses; resuming it with amp=fp16 (a CPU run continued on a GPU) starts the scale afresh."""
    out = tmp_path / "run"
    run_train(fogreid_cmd, train_root, out, "--epochs", "1")
    assert read_checkpoint(out / "last.pt")["scaler"] == {}
    run_train(fogreid_cmd, train_root, out, "--epochs", "2", "--resume", "--set", "amp=fp16")
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[-1]["epoch"] == 2 and "amp_skipped_steps" in history[-1]
