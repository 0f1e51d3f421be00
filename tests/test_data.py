import shutil

import numpy as np
import pytest
import torch

from fogreid.data.datasets import ReIDImages, load_dataset, load_fvrid, load_veri776, load_veriwild, parse_vehicle_name
from fogreid.data.image_io import list_images, read_image, resize_for_model
from fogreid.data.sampler import IdentitySampler
from fogreid.errors import FogreidError


def test_parse_names():
    assert parse_vehicle_name("00000_c013_298403_0.jpg") == (0, 12)
    assert parse_vehicle_name("0001_c001_00016450_0.jpg") == (1, 0)
    assert parse_vehicle_name("-1_c002_1.jpg") == (-1, 1)
    with pytest.raises(FogreidError, match="id_cCAM"):
        parse_vehicle_name("car.jpg")


def test_fvrid_readers(synth_root):
    import json

    counts = json.loads((synth_root / "fogreid_synth.json").read_text())["images"]
    syn = load_fvrid(synth_root, "syn")
    assert syn.paired and len(syn.train) == counts["syn/train"] and len(syn.gallery) == counts["syn/gallery"]
    assert all(r.clear_path.name == r.path.name and r.clear_path.parent.name == "train_clear" for r in syn.train)
    assert sorted(set(syn.train_labels())) == list(range(syn.num_train_ids))
    real = load_fvrid(synth_root, "real")
    # Generated data pairs the real-like test images with eval-only clear renders; train never.
    assert real.paired and all(r.clear_path is None for r in real.train)
    assert all(r.clear_path.parent.name == "query_clear_eval" for r in real.query)
    assert len(real.query) == counts["real/query"]
    clear = load_fvrid(synth_root, "clear")   # the syn test vehicles without fog: same ids, cameras, names
    assert [r.path.name for r in clear.query] == [r.path.name for r in syn.query]
    assert [r.pid for r in clear.gallery] == [r.pid for r in syn.gallery]
    assert all(r.path.parent.name == "query_clear" for r in clear.query) and not clear.paired
    with pytest.raises(FogreidError, match="unknown FVRID split"):
        load_fvrid(synth_root, "haze")


def test_missing_layout_is_explained(tmp_path):
    (tmp_path / "FVRID_real" / "query_foggy").mkdir(parents=True)
    with pytest.raises(FogreidError, match="missing train_foggy, gallery_foggy.*fogreid synth"):
        load_dataset("fvrid-real", tmp_path)
    with pytest.raises(FogreidError, match="unknown dataset"):
        load_dataset("market1501", tmp_path)


def test_veri776_layout(synth_root, tmp_path):
    sources = {"image_train": "train_foggy", "image_query": "query_foggy", "image_test": "gallery_foggy"}
    for target, source in sources.items():
        shutil.copytree(synth_root / "FVRID_real" / source, tmp_path / target)
    split = load_veri776(tmp_path)
    real = load_fvrid(synth_root, "real")
    assert [(r.pid, r.camid) for r in split.query] == [(r.pid, r.camid) for r in real.query]
    assert split.num_train_ids == real.num_train_ids


def test_veriwild_layout(synth_root, tmp_path):
    real = load_fvrid(synth_root, "real")
    info = ["id/image;Camera ID;Time;Model;Type;Color"]
    lists = {}
    for name, records in (("train_list", real.train), ("test_3000_query", real.query),
                          ("test_3000", real.query + real.gallery)):
        keys = []
        for r in records:
            key = f"{r.pid:05d}/{r.path.stem}"
            (tmp_path / "images" / f"{r.pid:05d}").mkdir(parents=True, exist_ok=True)
            shutil.copy(r.path, tmp_path / "images" / f"{key}.jpg")
            info.append(f"{key};{r.camid + 1};2018-01-01 00:00:00;Make;sedan;white")
            keys.append(key)
        lists[name] = keys
    split_dir = tmp_path / "train_test_split"
    split_dir.mkdir()
    for name, keys in lists.items():
        (split_dir / f"{name}.txt").write_text("\n".join(keys) + "\n")
    (split_dir / "vehicle_info.txt").write_text("\n".join(info) + "\n")
    split = load_veriwild(tmp_path)
    assert [(r.pid, r.camid) for r in split.query] == [(r.pid, r.camid) for r in real.query]
    assert len(split.gallery) == len(real.query) + len(real.gallery)
    assert all(r.path.is_file() for r in split.train)
    with pytest.raises(FogreidError, match="test_5000"):
        load_veriwild(tmp_path, test_size=5000)


def test_corrupt_images_name_their_path(synth_root, tmp_path):
    garbage = tmp_path / "00001_c001_000001_0.jpg"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(FogreidError, match=str(garbage)):
        read_image(garbage)
    good = next((synth_root / "FVRID_syn" / "train_clear").iterdir()).read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[: len(good) * 2 // 3])
    with pytest.raises(FogreidError, match="truncated.jpg.*truncated"):
        read_image(truncated)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(FogreidError, match="empty.png"):
        read_image(empty)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FogreidError, match="no images"):
        list_images(tmp_path / "nothing")


def test_resize_for_model():
    image = np.random.default_rng(0).integers(0, 256, (200, 100, 3), dtype=np.uint8)
    assert resize_for_model(image, (64, 32)).shape == (64, 32, 3)
    assert resize_for_model(image, (400, 200)).shape == (400, 200, 3)
    assert np.array_equal(resize_for_model(image, (200, 100)), image)
    # Shrinking averages areas: a 2x2 checkerboard becomes flat grey, not aliased.
    board = np.indices((64, 64)).sum(axis=0) % 2 * 255
    small = resize_for_model(np.repeat(board[..., None], 3, axis=2).astype(np.uint8), (32, 32))
    assert abs(int(small.mean()) - 127) <= 1 and small.std() < 1


def test_dataset_items_and_paired_flip(synth_root):
    syn = load_fvrid(synth_root, "syn")
    plain = ReIDImages(syn.train[:4], (64, 64), syn.train_labels()[:4])
    flipped = ReIDImages(syn.train[:4], (64, 64), syn.train_labels()[:4], hflip=1.0)
    a, b = plain[0], flipped[0]
    assert a["image"].dtype == torch.uint8 and a["image"].shape == (64, 64, 3)
    assert torch.equal(b["image"], a["image"].flip(1)) and torch.equal(b["clear"], a["clear"].flip(1))
    batch = torch.utils.data.default_collate([plain[i] for i in range(4)])
    assert batch["image"].shape == (4, 64, 64, 3) and batch["clear"].shape == (4, 64, 64, 3)


def test_identity_sampler():
    labels = [i // 5 for i in range(50)] + [10, 10]  # ten ids with 5 images, one with 2
    sampler = IdentitySampler(labels, ids_per_batch=3, instances_per_id=4, seed=0)
    batches = sampler.batches()
    assert batches and all(len(b) == 12 for b in batches)
    for batch in batches:
        ids = [labels[i] for i in batch]
        assert len(set(ids)) == 3 and all(ids.count(x) == 4 for x in set(ids))
    assert sampler.batches() == batches  # deterministic for an epoch
    sampler.set_epoch(1)
    assert sampler.batches() != batches
    sampler.set_epoch(1, start_batch=2)
    assert list(sampler) == sampler.batches()[2:] and len(sampler) == len(batches) - 2
    with pytest.raises(FogreidError, match="fewer than --ids-per-batch"):
        IdentitySampler([0, 0, 1, 1], ids_per_batch=3, instances_per_id=2)
