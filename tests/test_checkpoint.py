import pytest
import torch

from fogreid import __version__
from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write
from fogreid.model.build import build_model
from fogreid.model.checkpoint import load_network, load_weights, read_checkpoint, save_checkpoint
from fogreid.model.config import preset
from fogreid.model.fused import FusedDefogReID


@pytest.fixture
def net():
    torch.manual_seed(0)
    net = build_model(preset("edge", imgsz=(64, 64), num_ids=6))
    net.train()
    net(torch.rand(4, 3, 64, 64))  # move the BN running statistics away from their init
    return net.eval()


def test_round_trip(net, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, net, meta={"trained_on": "FVRID_syn"}, epoch=3)
    state = read_checkpoint(path)
    assert state["meta"]["fogreid_version"] == __version__
    assert state["meta"]["trained_on"] == "FVRID_syn" and state["epoch"] == 3
    loaded = load_network(path)
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        a, b = FusedDefogReID(net)(frames), FusedDefogReID.from_checkpoint(path)(frames)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert loaded.config == net.config
    assert list(tmp_path.iterdir()) == [path], "no temporary files left behind"


def test_mismatched_config_names_the_difference(net, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, net)
    other = preset("edge", imgsz=(64, 64), num_ids=6, backbone="resnet34")
    with pytest.raises(FogreidError, match=r"backbone: expected 'resnet34', checkpoint has 'resnet18'"):
        load_network(path, expect=other)
    with pytest.raises(FogreidError, match=r"shapes differ: classifier.weight \(6, 512\) vs \(9, 512\)"):
        load_weights(build_model(preset("edge", imgsz=(64, 64), num_ids=9)), read_checkpoint(path)["model"], path)


def test_truncated_or_foreign_files(net, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, net)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(FogreidError, match="truncated.pt: cannot be read.*cut short or damaged"):
        read_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": net.state_dict()}, foreign)
    with pytest.raises(FogreidError, match="not a fogreid checkpoint"):
        read_checkpoint(foreign)
    with pytest.raises(FogreidError, match="missing.pt: not found"):
        read_checkpoint(tmp_path / "missing.pt")


class Payload:  # any class instance needs unpickling code to load
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_is_never_run(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "fogreid.checkpoint", "payload": Payload()}, path)
    with pytest.raises(FogreidError, match="never unpickles") as caught:
        read_checkpoint(path)
    assert "weights_only=False" not in str(caught.value)   # torch's advice, which would run the code
    assert "pickled code ran" not in capsys.readouterr().out


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]
