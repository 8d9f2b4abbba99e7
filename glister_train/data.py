"""Datasets as in-memory uint8 tensors addressed by index.

Three formats reach the same :class:`Splits`:
- ``cifar10``: ``torchvision.datasets.CIFAR10(root, download=...)``, the official python batches;
- ``npz``: ``DIR/train.npz`` (and optionally ``DIR/test.npz``) with ``x`` uint8 (N, H, W, C) and ``y`` int;
- ``folder``: ``DIR/train/<class>/*.png|jpg`` (and optionally ``DIR/test/<class>/*``);
- ``auto``: whichever of the three ``DIR`` holds (the SageMaker channels' default).

The validation split is a seeded, class-stratified share of the training set (never the test set).
A batch is an index tensor; augmentation (pad-4 random crop, horizontal flip) and normalization run
batched on tensors on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .config import DataConfig
from .errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ImageData:
    x: torch.Tensor  # uint8 (N, C, H, W)
    y: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: torch.Tensor) -> ImageData:
        return ImageData(self.x[idx], self.y[idx])

    def to(self, device: torch.device | str) -> ImageData:
        return ImageData(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Splits:
    train: ImageData
    val: ImageData
    test: ImageData | None
    num_classes: int
    mean: torch.Tensor  # per channel, pixels / 255, of the training split
    std: torch.Tensor
    # (n_train,) bool: the training labels that injected noise made wrong (data.label_noise). For
    # measurement only: the selectors and the loss see ``train.y``, the noisy labels, and never this.
    noisy: torch.Tensor | None = None
    # data.imbalance: each class's training examples (by their true labels, before any noise)
    class_sizes: list[int] | None = None
    # (n_val,) bool: the validation labels made wrong (data.val_noise, data.val_labels): the trusted set's own noise
    val_noisy: torch.Tensor | None = None
    # data.noise_kind=instance: the cache folder of the reference model that placed the flips
    noise_reference: str = ""
    # each training and validation image's index in the dataset's training set as read (None: its own val_dir)
    origin: torch.Tensor | None = None
    val_origin: torch.Tensor | None = None

    def describe(self) -> str:
        test = len(self.test) if self.test is not None else 0
        noise = f" wrong_labels={float(self.noisy.float().mean()):.3f}" if self.noisy is not None else ""
        if self.val_noisy is not None:
            noise += f" wrong_val_labels={float(self.val_noisy.float().mean()):.3f}"
        if self.class_sizes:  # a long tail (data.imbalance): say how long
            noise += f" class_sizes={max(self.class_sizes)}..{min(self.class_sizes)}"
        return f"train={len(self.train)} val={len(self.val)} test={test} classes={self.num_classes}{noise}"


# ---------------------------------------------------------------- batches


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 standardized with the dataset's mean and std."""
    mean = mean.to(x.device).view(1, -1, 1, 1)
    std = std.to(x.device).view(1, -1, 1, 1)
    return (x.float().div_(255) - mean).div_(std)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4, positions: torch.Tensor | None = None,
            batch: int | None = None) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip, for a whole uint8 batch.

    Under data parallelism ``x`` is one rank's part of a global batch of ``batch`` images, at
    ``positions`` in it: the draws are made for the whole global batch (the same on every rank) and
    each rank applies its own, so N ranks augment exactly as one process would.
    """
    b = x.shape[0] if batch is None else batch
    # draw on the generator's device (CPU) so runs are reproducible whatever device holds the data
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    if positions is not None:
        dy, dx, flip = dy[positions], dx[positions], flip[positions]
    dy, dx, flip = dy.to(x.device), dx.to(x.device), flip.to(x.device)
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
    image = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[image, chan, rows, cols]


# ---------------------------------------------------------------- loading


def detect_format(root: Path) -> str:
    """What a folder holds: the official CIFAR-10 batches, train.npz, or train/<class>/ images."""
    if (root / "cifar-10-batches-py").is_dir():
        return "cifar10"
    if root.suffix == ".npz" or (root / "train.npz").is_file():
        return "npz"
    if (root / "train").is_dir():
        return "folder"
    raise DataError(f"cannot tell the dataset format of {str(root)!r}: expected cifar-10-batches-py/, train.npz "
                    "or train/<class>/ images in it")


def read_dataset(root: Path, dataset: str, cfg: DataConfig) -> tuple[ImageData, ImageData | None, int]:
    """(train, test or None, number of classes) from a folder in one of the supported formats."""
    if dataset == "auto":
        dataset = detect_format(root)
    reader = {"cifar10": _read_cifar10, "npz": _read_npz, "folder": _read_folder}[dataset]
    return reader(root, cfg)


def load_splits(cfg: DataConfig) -> Splits:
    """Read the dataset named by ``cfg``, check it, subsample and split it."""
    root = Path(cfg.data_dir).expanduser()
    train, test, inferred_classes = read_dataset(root, cfg.dataset, cfg)
    num_classes = cfg.num_classes or inferred_classes
    val = read_dataset(Path(cfg.val_dir).expanduser(), cfg.dataset, cfg)[0] if cfg.val_dir else None
    for name, part in (("train", train), ("test", test), ("validation", val)):
        if part is not None:
            _check_labels(name, part.y, num_classes, root)

    # each training image's index in the dataset as read, followed through the subsamples below: what a labels
    # file (data.train_labels, data.val_labels) is indexed by
    origin = torch.arange(len(train))
    dataset = train
    split_gen = torch.Generator().manual_seed(cfg.split_seed)
    if cfg.train_limit and cfg.train_limit < len(train):
        pick = stratified_sample(train.y, cfg.train_limit, split_gen)
        train, origin = train.subset(pick), origin[pick]
    reference, probabilities = "", None
    if cfg.noise_kind == "instance" and (cfg.label_noise > 0 or cfg.val_noise > 0):
        from .instance_noise import reference_probabilities

        reference, probabilities = reference_probabilities(dataset.x, dataset.y, origin, root, cfg.noise_seed,
                                                           cfg.split_seed)
    if test is not None and cfg.test_limit and cfg.test_limit < len(test):
        test = test.subset(stratified_sample(test.y, cfg.test_limit, split_gen))
    val_origin = None
    if val is None:  # else a validation set of its own (e.g. SageMaker's validation channel): no split
        n_val = max(1, round(cfg.val_fraction * len(train)))
        if n_val >= len(train):
            raise DataError(f"{root}: {len(train)} training images are too few to hold out "
                            f"val_fraction={cfg.val_fraction}")
        kept, val_idx = hold_out(train.y, n_val, split_gen)
        val, train = train.subset(val_idx), train.subset(kept)
        val_origin, origin = origin[val_idx], origin[kept]
    class_sizes = None
    if cfg.imbalance > 1:  # the training split only, after the validation split: validation stays balanced
        pick = long_tail(train.y, cfg.imbalance, num_classes,
                         torch.Generator().manual_seed(IMBALANCE_STREAM + cfg.noise_seed))
        train, origin = train.subset(pick), origin[pick]
        class_sizes = torch.bincount(train.y, minlength=num_classes).tolist()
    noisy = val_noisy = None
    if cfg.label_noise > 0:  # the training split; the validation split by data.val_noise, the test set never
        noisy_y = noisy_labels(train.y, cfg.label_noise, cfg.noise_kind, num_classes,
                               torch.Generator().manual_seed(NOISE_STREAM + cfg.noise_seed),
                               None if probabilities is None else probabilities[origin])
        noisy = noisy_y != train.y
        train = ImageData(train.x, noisy_y)
    if cfg.val_noise > 0:
        if cfg.noise_kind == "instance" and val_origin is None:
            raise DataError("data.val_noise of kind instance scores the validation split held out of the training "
                            "set, and this run reads a validation set of its own (data.val_dir): use "
                            "data.noise_kind=symmetric, or drop data.val_dir")
        val_y = noisy_labels(val.y, cfg.val_noise, cfg.noise_kind, num_classes,
                             torch.Generator().manual_seed(VAL_NOISE_STREAM + cfg.noise_seed),
                             None if probabilities is None else probabilities[val_origin])
        val_noisy, val = val_y != val.y, ImageData(val.x, val_y)
    if cfg.train_labels:  # labels people (or a model of their mistakes) gave the same images
        given = read_labels(cfg.train_labels, "data.train_labels", len(origin) and int(origin.max()) + 1, num_classes)
        noisy, train = given[origin] != train.y, ImageData(train.x, given[origin])
    if cfg.val_labels:
        if val_origin is None:
            raise DataError("data.val_labels relabels the validation split held out of the training set, and this "
                            "run reads a validation set of its own (data.val_dir): drop one of them")
        given = read_labels(cfg.val_labels, "data.val_labels", int(val_origin.max()) + 1, num_classes)
        val_noisy, val = given[val_origin] != val.y, ImageData(val.x, given[val_origin])
    mean, std = channel_stats(train.x)
    return Splits(train, val, test, num_classes, mean, std, noisy, class_sizes, val_noisy, reference, origin,
                  val_origin)


def read_labels(path: str, key: str, needed: int, num_classes: int) -> torch.Tensor:
    """One label per image of the dataset's training set, in its order: a ``.npy`` array, or a ``.npz`` whose
    array is ``labels`` (or its only one); a file that does not fit is a DataError naming ``key``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{key}: {str(file)!r} does not exist (one label per training image, as .npy or .npz)")
    try:
        loaded = np.load(file, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            array = loaded
        else:
            with loaded:
                names = list(loaded.files)
                if "labels" not in names and len(names) != 1:
                    raise DataError(f"{key}: {str(file)!r} holds {', '.join(names)}; name the labels' array 'labels'")
                array = loaded["labels" if "labels" in names else names[0]]
        labels = torch.from_numpy(np.asarray(array)).long()
    except (ValueError, OSError, TypeError) as exc:
        raise DataError(f"{key}: {str(file)!r} is not a .npy or .npz array of labels ({exc})") from None
    if labels.ndim != 1 or len(labels) < needed:
        raise DataError(f"{key}: {str(file)!r} holds {tuple(labels.shape)} labels; it needs one per training image "
                        f"(at least {needed})")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(f"{key}: {str(file)!r} has labels outside 0..{num_classes - 1}")
    return labels


# the noise's own random stream: seeded with noise_seed alone, the flipped examples would be the first
# ones a random subset of a run with the same seed draws (the same permutation), 100% wrong at 30%
NOISE_STREAM = 0x6E015E00

IMBALANCE_STREAM = 0x1B0A1A00
VAL_NOISE_STREAM = 0x7A15E000


def long_tail(y: torch.Tensor, ratio: float, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of a long-tailed subsample: class c keeps ``round(n_c * ratio ** (-c / (C - 1)))`` of its
    ``n_c`` examples, drawn at random (the exponential profile of Cui et al. 2019), so the largest class holds
    ``ratio`` times the smallest when the classes start equal."""
    keep = []
    for c in range(num_classes):
        members = (y == c).nonzero().squeeze(1)
        share = ratio ** (-c / max(1, num_classes - 1))
        take = max(1, round(share * len(members))) if len(members) else 0
        keep.append(members[torch.randperm(len(members), generator=generator)[:take]])
    return torch.sort(torch.cat(keep)).values


# CIFAR-10's class-dependent flips (Patrini et al. 2017): truck->automobile, bird->airplane, deer->horse, cat<->dog
PAIR_FLIPS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def noisy_labels(y: torch.Tensor, rate: float, kind: str, num_classes: int, generator: torch.Generator,
                 probabilities: torch.Tensor | None = None) -> torch.Tensor:
    """Labels with exactly ``round(rate * n)`` made wrong (``symmetric``: drawn uniformly among the other
    classes), or in each source class of :data:`PAIR_FLIPS` exactly ``round(rate * n_c)`` flipped to its pair, or
    (``instance``) in each class exactly ``round(rate * n_c)``: those whose most likely wrong class by the reference
    model's ``probabilities`` is most probable, to that class."""
    if kind == "instance":
        from .instance_noise import instance_flips

        return instance_flips(y, probabilities, rate)
    out = y.clone()
    if kind == "symmetric":
        flip = torch.randperm(len(y), generator=generator)[: round(rate * len(y))]
        shift = torch.randint(1, num_classes, (len(flip),), generator=generator)  # never the same class
        out[flip] = (y[flip] + shift) % num_classes
        return out
    if num_classes != 10:
        raise DataError(f"data.noise_kind=pairs is CIFAR-10's class pairs and needs 10 classes, not {num_classes}; "
                        "use data.noise_kind=symmetric")
    for source, target in PAIR_FLIPS.items():
        members = (y == source).nonzero().squeeze(1)
        flip = members[torch.randperm(len(members), generator=generator)[: round(rate * len(members))]]
        out[flip] = target
    return out


def hold_out(y: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held): sorted indices of the examples left, and of ``n`` held out by :func:`stratified_sample`."""
    held = stratified_sample(y, n, generator)
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[held] = False
    return keep.nonzero().squeeze(1), held


def stratified_sample(y: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` indices drawn at random, each class getting its share (largest remainder, exact total)."""
    counts = torch.bincount(y)
    share = counts.double() * k / len(y)
    quota = share.floor().long()
    remainder = k - int(quota.sum())
    if remainder:
        quota[torch.argsort(share - quota, descending=True, stable=True)[:remainder]] += 1
    perm = torch.randperm(len(y), generator=generator)
    by_class = perm[torch.argsort(y[perm], stable=True)]  # random order within each class
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(y)) - starts[y[by_class]]
    return torch.sort(by_class[rank < quota[y[by_class]]]).values


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images in [0, 1] units, in chunks to bound memory."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].double().div_(255).transpose(0, 1).reshape(c, -1)
        total += part.sum(1)
        squares += part.square().sum(1)
    n = x.numel() / c
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


def _check_labels(name: str, y: torch.Tensor, num_classes: int, root: Path) -> None:
    if len(y) == 0:
        raise DataError(f"{root}: the {name} split has no examples")
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise DataError(
            f"{root}: {name} label {int(y[i])} at index {i} is outside [0, {num_classes}) "
            f"({int(bad.sum())} such labels); fix the labels or set data.num_classes"
        )


def _from_nhwc(x: np.ndarray, y: np.ndarray, where: str) -> ImageData:
    x = np.asarray(x)
    if x.ndim == 3:  # grayscale (N, H, W)
        x = x[..., None]
    if x.ndim != 4 or x.dtype != np.uint8:
        raise DataError(f"{where}: expected x as uint8 (N, H, W, C), got {x.dtype} {x.shape}")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: expected y as integers (N,) matching x, got {y.dtype} {y.shape}")
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return ImageData(xt, torch.from_numpy(y.astype(np.int64)))


def _read_cifar10(root: Path, cfg: DataConfig) -> tuple[ImageData, ImageData, int]:
    from torchvision.datasets import CIFAR10

    parts = []
    existed = root.exists()
    for train in (True, False):
        try:
            ds = CIFAR10(str(root), train=train, download=cfg.download)
        except Exception as exc:  # offline download (URLError), missing or corrupt files (RuntimeError)
            if not existed and root.is_dir() and not any(root.iterdir()):
                root.rmdir()  # the failed download made it: leave no empty data folder behind
            raise DataError(
                f"CIFAR-10 is not in {str(root)!r} and could not be fetched ({type(exc).__name__}: {exc}). "
                "Online: keep data.download=true and it downloads there. Offline: copy the official "
                f"cifar-10-batches-py/ folder into {str(root)!r}, or use --dataset npz --data-dir DIR with DIR/train.npz"
            ) from None
        parts.append(_from_nhwc(ds.data, np.asarray(ds.targets), f"{root} (cifar10)"))
    return parts[0], parts[1], 10


def _read_npz(root: Path, cfg: DataConfig) -> tuple[ImageData, ImageData | None, int]:
    train_file = root if root.suffix == ".npz" else root / "train.npz"
    if not train_file.is_file():
        raise DataError(
            f"no {train_file.name} in {str(root)!r}: the npz format needs DIR/train.npz (and optionally DIR/test.npz) "
            "with x uint8 (N, H, W, C) and y int; pass the folder with --data-dir"
        )
    train = _read_npz_file(train_file)
    test_file = train_file.with_name("test.npz")
    test = _read_npz_file(test_file) if train_file.name == "train.npz" and test_file.is_file() else None
    classes_file = train_file.with_name("classes.txt")
    if classes_file.is_file() or cfg.num_classes:
        inferred = cfg.num_classes or len([line for line in classes_file.read_text().splitlines() if line.strip()])
    else:  # the labels must then be 0..C-1 with every class present: a stray 255 must not make 256 classes
        labels = torch.unique(torch.cat([train.y] + ([test.y] if test is not None else [])))
        inferred = int(labels.max()) + 1 if len(labels) else 0
        if int(labels.min()) >= 0 and len(labels) != inferred:  # (a negative label is named by the range check)
            missing = sorted(set(range(max(inferred, 0))) - set(labels.tolist()))[:5]
            raise DataError(f"{train_file}: the labels are not 0..C-1 with every class present (found {len(labels)} "
                            f"distinct labels from {int(labels.min())} to {int(labels.max())}; missing e.g. {missing}); "
                            "set data.num_classes, or list the class names in classes.txt beside it")
    return train, test, inferred


def _read_npz_file(path: Path) -> ImageData:
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # an .npz is a zip archive; anything else numpy would try to unpickle
            raise DataError(f"{path}: not a readable .npz archive; write it with np.savez(path, x=..., y=...)")
    try:
        with np.load(path, allow_pickle=False) as blob:
            if not hasattr(blob, "files"):
                raise DataError(f"{path}: a single .npy array, not an .npz archive with arrays 'x' and 'y'")
            if "x" not in blob or "y" not in blob:
                raise DataError(f"{path}: expected arrays 'x' and 'y', found {', '.join(blob.files) or 'none'}")
            data = _from_nhwc(blob["x"], blob["y"], str(path))
    except DataError:
        raise
    except ValueError as exc:  # object arrays: numpy would need allow_pickle, which can run code
        raise DataError(f"{path}: holds object arrays, which would have to be unpickled ({type(exc).__name__}); "
                        "save x as uint8 and y as integers with np.savez") from None
    except (OSError, EOFError) as exc:  # not a zip / npy file at all, or truncated
        raise DataError(f"{path}: not a readable .npz archive ({type(exc).__name__}); write it with "
                        "np.savez(path, x=..., y=...)") from None
    if len(data) == 0:
        raise DataError(f"{path}: holds 0 images")
    return data


def _read_folder(root: Path, cfg: DataConfig) -> tuple[ImageData, ImageData | None, int]:
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"no train/ folder in {str(root)!r}: the folder format is DIR/train/<class>/*.png")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{train_dir} has no class folders: expected {train_dir}/<class>/*.png")
    train = _read_images(train_dir, classes)
    test = _read_images(root / "test", classes) if (root / "test").is_dir() else None
    return train, test, len(classes)


def _read_images(split_dir: Path, classes: list[str]) -> ImageData:
    from PIL import Image

    xs, ys = [], []
    for label, name in enumerate(classes):
        for path in sorted((split_dir / name).glob("*")) if (split_dir / name).is_dir() else []:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    with Image.open(path) as img:
                        xs.append(np.asarray(img.convert("RGB")))
                except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for corrupt or truncated files
                    raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {str(exc)[:100]}); "
                                    "remove or replace it") from None
                ys.append(label)
    if not xs:
        raise DataError(f"{split_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under its class folders")
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise DataError(f"{split_dir}: images differ in size ({sorted(shapes)[:3]}...); resize them to one size")
    return _from_nhwc(np.stack(xs), np.asarray(ys), str(split_dir))
