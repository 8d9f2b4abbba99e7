"""experiments/human_labels.py: CIFAR-10N's label sets, read from its file or a zip, checked against the dataset."""

import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from glister_train.errors import DataError

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "human_labels.py"
spec = importlib.util.spec_from_file_location("human_labels", SCRIPT)
human_labels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(human_labels)


def _human(clean: np.ndarray) -> dict[str, np.ndarray]:
    out = {"clean_label": clean}
    for i, key in enumerate(human_labels.LABEL_SETS.values()):
        out[key] = (clean + i) % 10
    return out


def test_the_file_and_a_zip_holding_it_read_the_same(tmp_path: Path):
    clean = np.arange(30) % 10
    torch.save(_human(clean), tmp_path / "CIFAR-10_human.pt")
    with zipfile.ZipFile(tmp_path / "CIFAR-N.zip", "w") as archive:
        archive.writestr("__MACOSX/CIFAR-N/._CIFAR-10_human.pt", b"not a torch file")  # the resource fork macOS adds
        archive.write(tmp_path / "CIFAR-10_human.pt", "CIFAR-N/CIFAR-10_human.pt")
    direct = human_labels.read_human_file(tmp_path / "CIFAR-10_human.pt")
    zipped = human_labels.read_human_file(tmp_path / "CIFAR-N.zip")
    assert direct.keys() == zipped.keys() and all(np.array_equal(direct[k], zipped[k]) for k in direct)
    files = human_labels.label_files(zipped, clean)
    assert sorted(files) == ["aggre", "random1", "random2", "random3", "worse"]
    assert np.array_equal(files["aggre"], clean) and np.array_equal(files["worse"], (clean + 1) % 10)


def test_labels_for_other_images_are_refused(tmp_path: Path):
    clean = np.arange(30) % 10
    shifted = np.roll(clean, 1)  # the same labels in another image order
    with pytest.raises(DataError, match="match 0.0% of the dataset's 30 training labels"):
        human_labels.label_files(_human(shifted), clean)
    with pytest.raises(DataError, match="match 0.0% of the dataset's 29"):
        human_labels.label_files(_human(clean), clean[:29])
    torch.save({"clean_label": clean, "noisy_label": clean}, tmp_path / "CIFAR-100_human.pt")
    with pytest.raises(DataError, match="lacks aggre_label"):
        human_labels.read_human_file(tmp_path / "CIFAR-100_human.pt")
