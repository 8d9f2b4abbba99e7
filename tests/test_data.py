from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glister_train.config import DataConfig
from glister_train.data import augment, channel_stats, load_splits, normalize, stratified_sample
from glister_train.errors import ConfigError, DataError

from .conftest import make_images, write_npz


def test_npz_splits_are_seeded_stratified_and_disjoint(npz_dir: Path):
    cfg = DataConfig(dataset="npz", data_dir=str(npz_dir), val_fraction=0.25)
    a, b = load_splits(cfg), load_splits(cfg)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    assert (len(a.train), len(a.val), len(a.test)) == (150, 50, 80)
    assert a.num_classes == 4
    assert sorted(torch.bincount(a.val.y).tolist()) == [12, 12, 13, 13]
    # no training image is also a validation image
    train_rows = {bytes(x.numpy()) for x in a.train.x}
    assert not any(bytes(x.numpy()) in train_rows for x in a.val.x)
    other = load_splits(DataConfig(dataset="npz", data_dir=str(npz_dir), val_fraction=0.25, split_seed=1))
    assert not torch.equal(other.val.x, a.val.x)


def test_images_are_nchw_uint8_and_stats_match_numpy(npz_dir: Path):
    splits = load_splits(DataConfig(dataset="npz", data_dir=str(npz_dir)))
    assert splits.train.x.dtype == torch.uint8 and splits.train.x.shape[1:] == (3, 12, 12)
    pixels = splits.train.x.numpy().transpose(1, 0, 2, 3).reshape(3, -1) / 255.0
    assert np.allclose(splits.mean.numpy(), pixels.mean(1), atol=1e-6)
    assert np.allclose(splits.std.numpy(), pixels.std(1), atol=1e-5)
    z = normalize(splits.train.x, splits.mean, splits.std)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)


def test_stratified_sample_is_exact_and_balanced():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    idx = stratified_sample(y, 10, torch.Generator().manual_seed(0))
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert torch.bincount(y[idx]).tolist() == [5, 3, 2]


def test_train_limit_subsamples_the_pool(npz_dir: Path):
    splits = load_splits(DataConfig(dataset="npz", data_dir=str(npz_dir), train_limit=100, test_limit=40))
    assert len(splits.train) + len(splits.val) == 100 and len(splits.test) == 40


def test_augment_crops_and_flips_batched():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).reshape(2, 3, 8, 8).to(torch.uint8)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    again = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    # every output is a crop of the zero-padded image, possibly mirrored
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        crops = [padded[i, :, r : r + 8, c : c + 8] for r in range(9) for c in range(9)]
        assert any(torch.equal(out[i], crop) or torch.equal(out[i], crop.flip(2)) for crop in crops)


def test_augment_with_zero_padding_is_identity_or_flip():
    x = torch.randint(0, 255, (64, 3, 6, 6), dtype=torch.uint8)
    out = augment(x, torch.Generator().manual_seed(1), pad=0)
    flipped = [torch.equal(o, xi.flip(2)) and not torch.equal(o, xi) for o, xi in zip(out, x)]
    same = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same)) and 10 < sum(flipped) < 54


def test_image_folder(tmp_path: Path):
    x, y = make_images(12, classes=3, size=8)
    for split in ("train", "test"):
        for i, (img, label) in enumerate(zip(x, y)):
            d = tmp_path / split / f"class_{label}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i}.png")
    splits = load_splits(DataConfig(dataset="folder", data_dir=str(tmp_path), val_fraction=0.25))
    assert splits.num_classes == 3 and len(splits.test) == 12 and len(splits.train) == 9
    assert sorted(torch.cat([splits.train.y, splits.val.y]).tolist()) == sorted(y.tolist())


def test_image_folder_without_images_is_an_error(tmp_path: Path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="holds no images"):
        load_splits(DataConfig(dataset="folder", data_dir=str(tmp_path)))


def test_labels_outside_the_classes_are_an_error(tmp_path: Path):
    write_npz(tmp_path)
    with pytest.raises(DataError, match=r"label 3 at index \d+ is outside \[0, 3\)"):
        load_splits(DataConfig(dataset="npz", data_dir=str(tmp_path), num_classes=3))
    x, y = make_images(20)
    y[5] = -1
    np.savez(tmp_path / "train.npz", x=x, y=y)
    with pytest.raises(DataError, match=r"train label -1 at index 5"):
        load_splits(DataConfig(dataset="npz", data_dir=str(tmp_path)))


def test_missing_datasets_say_how_to_get_them(tmp_path: Path):
    with pytest.raises(DataError, match="copy the official cifar-10-batches-py"):
        load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path), download=False))
    with pytest.raises(DataError, match="npz format needs DIR/train.npz"):
        load_splits(DataConfig(dataset="npz", data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="no train/ folder"):
        load_splits(DataConfig(dataset="folder", data_dir=str(tmp_path)))


def test_channel_stats_of_constant_images():
    x = torch.full((5, 3, 4, 4), 51, dtype=torch.uint8)
    mean, std = channel_stats(x, chunk=2)
    assert torch.allclose(mean, torch.full((3,), 0.2)) and torch.all(std < 1e-3)


# ---------------------------------------------------------------- label noise


def test_symmetric_noise_is_exact_seeded_and_always_wrong():
    from glister_train.data import noisy_labels

    y = torch.arange(1000) % 10
    a = noisy_labels(y, 0.4, "symmetric", 10, torch.Generator().manual_seed(0))
    b = noisy_labels(y, 0.4, "symmetric", 10, torch.Generator().manual_seed(0))
    c = noisy_labels(y, 0.4, "symmetric", 10, torch.Generator().manual_seed(1))
    assert int((a != y).sum()) == 400 and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(a[a != y], minlength=10).min() > 20  # wrong labels spread over every class


def test_pair_noise_flips_the_cifar10_pairs_only():
    from glister_train.data import PAIR_FLIPS, noisy_labels

    y = torch.arange(1000) % 10
    out = noisy_labels(y, 0.4, "pairs", 10, torch.Generator().manual_seed(0))
    for c in range(10):
        changed = out[(y == c)] != c
        assert int(changed.sum()) == (40 if c in PAIR_FLIPS else 0)
        if c in PAIR_FLIPS:
            assert set(out[(y == c) & (out != y)].tolist()) == {PAIR_FLIPS[c]}
    with pytest.raises(DataError, match="needs 10 classes"):
        noisy_labels(y % 4, 0.4, "pairs", 4, torch.Generator())


def test_noise_reaches_the_training_split_only(tmp_path: Path):
    write_npz(tmp_path / "d", n_train=400, classes=4)
    clean = load_splits(DataConfig(dataset="npz", data_dir=str(tmp_path / "d")))
    noisy = load_splits(DataConfig(dataset="npz", data_dir=str(tmp_path / "d"), label_noise=0.25))
    assert clean.noisy is None and noisy.noisy is not None
    assert torch.equal(clean.val.y, noisy.val.y) and torch.equal(clean.test.y, noisy.test.y)
    assert torch.equal(clean.train.x, noisy.train.x)
    assert torch.equal(noisy.noisy, noisy.train.y != clean.train.y)
    assert int(noisy.noisy.sum()) == round(0.25 * len(clean.train))
    assert "wrong_labels=0.250" in noisy.describe()


@pytest.mark.parametrize("case, message", [
    ("stray_label", "labels are not 0..C-1 with every class present"),
    ("empty", "holds 0 images"),
    ("not_npz", "not a readable .npz archive"),
    ("object", "holds object arrays"),
])
def test_bad_npz_data_is_a_one_line_data_error(tmp_path: Path, case: str, message: str):
    folder = tmp_path / "d"
    folder.mkdir()
    x, y = make_images(40, 4)
    if case == "stray_label":
        y[3] = 255  # once trained a 256-class model and reported completed
        np.savez(folder / "train.npz", x=x, y=y)
    elif case == "empty":
        np.savez(folder / "train.npz", x=x[:0], y=y[:0])
    elif case == "not_npz":
        (folder / "train.npz").write_text("not an archive")
    else:
        np.savez(folder / "train.npz", x=x, y=np.array([{"label": 1}] * 40, dtype=object))
    with pytest.raises(DataError, match=message):
        load_splits(DataConfig(dataset="npz", data_dir=str(folder)))


def test_a_corrupt_image_is_named(tmp_path: Path):
    cat = tmp_path / "f" / "train" / "cat"
    cat.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(cat / "good.png")
    (cat / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        load_splits(DataConfig(dataset="folder", data_dir=str(tmp_path / "f")))


def test_imbalance_makes_a_seeded_long_tail_of_the_training_split_only(tmp_path: Path):
    from glister_train.data import long_tail

    y = torch.arange(1000) % 10
    keep = long_tail(y, 10.0, 10, torch.Generator().manual_seed(0))
    sizes = torch.bincount(y[keep], minlength=10).tolist()
    assert sizes == [round(100 * 10 ** (-c / 9)) for c in range(10)] and sizes[0] == 100 and sizes[-1] == 10
    assert torch.equal(keep, long_tail(y, 10.0, 10, torch.Generator().manual_seed(0)))
    assert not torch.equal(keep, long_tail(y, 10.0, 10, torch.Generator().manual_seed(1)))

    write_npz(tmp_path / "d", n_train=400, classes=4)
    balanced = load_splits(DataConfig(dataset="npz", data_dir=str(tmp_path / "d")))
    tailed = load_splits(DataConfig(dataset="npz", data_dir=str(tmp_path / "d"), imbalance=8.0))
    assert torch.equal(balanced.val.y, tailed.val.y) and torch.equal(balanced.test.y, tailed.test.y)
    counts = torch.bincount(tailed.train.y, minlength=4)
    full = torch.bincount(balanced.train.y, minlength=4)
    assert counts.tolist() == [round(int(full[c]) * 8 ** (-c / 3)) for c in range(4)]
    assert "class_sizes=" in tailed.describe() and "class_sizes=" not in balanced.describe()
    both = load_splits(DataConfig(dataset="npz", data_dir=str(tmp_path / "d"), imbalance=8.0, label_noise=0.2))
    assert torch.equal(both.train.x, tailed.train.x) and int(both.noisy.sum()) == round(0.2 * len(tailed.train))


def test_a_labels_file_relabels_the_training_and_validation_splits_and_is_measured(tmp_path: Path):
    """data.train_labels / data.val_labels: one label per image of the dataset as read, followed through the
    subsample and the validation split; what differs from the dataset's labels is measured, never shown."""
    from glister_train import config as C

    data = write_npz(tmp_path / "data", n_train=200)
    original = np.load(data / "train.npz")["y"]
    relabelled = (original + 1) % 4  # every label wrong
    relabelled[::2] = original[::2]  # half of them right again
    np.save(tmp_path / "train_labels.npy", relabelled)
    np.savez(tmp_path / "val_labels.npz", labels=original)
    cfg = C.merge(C.Config(), {"data": {"dataset": "npz", "data_dir": str(data), "train_limit": 150,
                                        "train_labels": str(tmp_path / "train_labels.npy"),
                                        "val_labels": str(tmp_path / "val_labels.npz")}}).data
    splits, plain = load_splits(cfg), load_splits(C.replace(cfg, train_labels="", val_labels=""))
    assert torch.equal(splits.train.x, plain.train.x) and torch.equal(splits.val.x, plain.val.x)
    assert torch.equal(splits.noisy, splits.train.y != plain.train.y)
    assert 0.3 < float(splits.noisy.float().mean()) < 0.7  # about half
    assert torch.equal(splits.val.y, plain.val.y) and not splits.val_noisy.any()
    np.save(tmp_path / "short.npy", relabelled[:10])
    with pytest.raises(DataError, match="data.train_labels: .* holds \\(10,\\) labels; it needs one per training image"):
        load_splits(C.replace(cfg, train_labels=str(tmp_path / "short.npy")))
    np.save(tmp_path / "big.npy", relabelled + 7)
    with pytest.raises(DataError, match="labels outside 0..3"):
        load_splits(C.replace(cfg, train_labels=str(tmp_path / "big.npy")))


def test_instance_flips_take_each_class_most_confusable_images_to_their_confusing_class():
    from glister_train.data import noisy_labels

    generator = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    probabilities = torch.softmax(torch.randn(200, 4, generator=generator) * 3, 1)
    out = noisy_labels(y, 0.3, "instance", 4, torch.Generator(), probabilities)
    assert torch.equal(out, noisy_labels(y, 0.3, "instance", 4, torch.Generator().manual_seed(9), probabilities))
    wrong = probabilities.clone()
    wrong[torch.arange(200), y] = -1
    score, target = wrong.max(1)
    for c in range(4):
        members = y == c
        flipped, kept = members & (out != y), members & (out == y)
        assert int(flipped.sum()) == round(0.3 * int(members.sum()))  # exact, class by class
        assert float(score[flipped].min()) >= float(score[kept].max())  # the most ambiguous of the class
        assert torch.equal(out[flipped], target[flipped])  # each to the class it is confused with


def test_the_reference_model_never_sees_the_images_it_scores():
    from glister_train.instance_noise import folds

    labels = torch.arange(400) % 4
    pool = torch.arange(0, 400, 2)  # half the dataset: the other half trains the reference
    [(trained, scored)] = folds(labels, pool, split_seed=0)
    assert not torch.isin(trained, pool).any() and torch.equal(scored, pool)
    everything = torch.arange(400)  # no image outside the pool: two halves, each scored by the other's model
    (a, b), (c, d) = folds(labels, everything, split_seed=0)
    assert torch.equal(a, d) and torch.equal(b, c) and not torch.isin(a, b).any()
    assert torch.equal(torch.sort(torch.cat([a, b])).values, everything)
    assert torch.bincount(labels[a]).tolist() == [50] * 4  # stratified


def test_the_reference_models_cache_keeps_its_name_when_an_option_they_run_without_is_added():
    """The cache is named by the reference models' recipe: a new training option, off there, must not rename it
    (every run would train them again, 30 minutes on this machine). The name was recorded at 7bc1d72, before
    train.early_learning."""
    from glister_train.instance_noise import cache_folder

    x = torch.arange(4 * 3 * 2 * 2, dtype=torch.uint8).reshape(4, 3, 2, 2)
    assert cache_folder(x, torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1]), "d", 0, 0)[2].name == "c1b0c554fc221e8c"


def test_instance_noise_is_placed_by_a_cached_reference_model_in_the_training_and_trusted_splits(
        tmp_path: Path, monkeypatch):
    from glister_train import config as C
    from glister_train import instance_noise, run

    data = write_npz(tmp_path / "data", n_train=400)
    cfg = C.merge(C.Config(), {"data": {"dataset": "npz", "data_dir": str(data), "train_limit": 200,
                                        "noise_kind": "instance", "label_noise": 0.3, "val_noise": 0.1}}).data
    clean = load_splits(C.replace(cfg, label_noise=0.0, val_noise=0.0))
    lines = []
    splits = load_splits(cfg)
    folder = Path(splits.noise_reference)
    assert folder.parent == data / instance_noise.CACHE and (folder / "fold-0" / "model.pt").is_file()
    recipe = json.loads((folder / instance_noise.RECIPE).read_text())
    assert recipe["train"]["epochs"] == instance_noise.REFERENCE_EPOCHS and recipe["folds"] == 1
    assert torch.equal(splits.train.x, clean.train.x) and torch.equal(splits.test.y, clean.test.y)
    for part, true, wrong, rate in ((splits.train, clean.train.y, splits.noisy, 0.3),
                                    (splits.val, clean.val.y, splits.val_noisy, 0.1)):
        assert torch.equal(wrong, part.y != true)
        for c in range(4):
            assert int(wrong[true == c].sum()) == round(rate * int((true == c).sum()))
    # the second run reads the cache: no reference model is trained again, and the labels are the same
    monkeypatch.setattr(run, "train_run", lambda *a, **k: lines.append("trained"))
    again = load_splits(cfg)
    assert not lines and torch.equal(again.train.y, splits.train.y) and torch.equal(again.val.y, splits.val.y)
    with pytest.raises(ConfigError, match="data.val_noise: 0.1 is invalid; it must be 0 when data.val_labels"):
        C.validate(C.merge(C.Config(), {"data": {"val_noise": 0.1, "val_labels": "x.npy"}}))
