"""Real data sets, found offline first: --data-dir, $EDGECLS_DATA, Debian's /usr/share/datasets, then a
user cache folder where torchvision may download them.

Every source is read into uint8 tensors [N, C, H, W] (upright, as a user's own PNG would be) so that
training, evaluation and the runtime parity tests apply one and the same preprocessing.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UsageError
from .locations import user_cache
from .registry import CIFAR10_CLASSES, ModelSpec, Preprocess

DEBIAN_DATASETS = Path("/usr/share/datasets")  # Debian's dataset packages (dataset-fashion-mnist)
# A checkout laid out beside a shared data folder (../shared/datasets, as CI lays it out): looked in after
# --data-dir when $EDGECLS_DATA is not set, so the main job and the tests find the same data with nothing set.
SHARED_SIBLING = Path(__file__).resolve().parents[2] / "shared" / "datasets"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def cache_dir() -> Path:
    return user_cache("data")


@dataclass
class ImageSet:
    """A split of a data set. Folder sources decode lazily, so --limit decodes only what it uses."""

    labels: torch.Tensor  # int64 [N]
    classes: tuple[str, ...]
    source: str
    _tensor: torch.Tensor | None = None  # uint8 [N, C, H, W]
    _files: Sequence[str] | None = None
    _decode: Callable[[Sequence[str]], torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def files(self) -> Sequence[str] | None:
        """The image files behind the set (image folders), or None for in-memory data sets."""
        return self._files

    def images(self, index: torch.Tensor | None = None) -> torch.Tensor:
        if self._tensor is not None:
            return self._tensor if index is None else self._tensor[index]
        files = self._files if index is None else [self._files[i] for i in index.tolist()]
        return self._decode(files)

    def subset(self, index: torch.Tensor) -> ImageSet:
        """An in-memory subset (decoded once)."""
        return ImageSet(self.labels[index], self.classes, self.source, _tensor=self.images(index))


# ---------------------------------------------------------------- readers of each on-disk layout


def _read_idx(path: Path) -> np.ndarray:
    """IDX (MNIST-style) file, plain or gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_torchvision(root: Path, train: bool) -> ImageSet | None:
    if not (root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").exists():
        return None
    from torchvision.datasets import FashionMNIST

    ds = FashionMNIST(str(root), train=train, download=False)
    return ImageSet(
        ds.targets.long(),
        tuple(ds.classes),
        f"{root} (torchvision FashionMNIST)",
        _tensor=ds.data.unsqueeze(1).contiguous(),
    )


def _fashion_debian(root: Path, train: bool) -> ImageSet | None:
    folder = root / "fashion-mnist"
    prefix = "train" if train else "t10k"
    img, lab = folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"
    if not (img.exists() and lab.exists()):
        return None
    from .registry import FASHION_MNIST_CLASSES

    images = torch.from_numpy(_read_idx(img).copy()).unsqueeze(1)
    return ImageSet(
        torch.from_numpy(_read_idx(lab).astype(np.int64)),
        FASHION_MNIST_CLASSES,
        f"{folder} (Debian dataset-fashion-mnist)",
        _tensor=images,
    )


def _emnist_torchvision(root: Path, train: bool) -> ImageSet | None:
    if not (root / "EMNIST" / "raw" / "emnist-bymerge-test-images-idx3-ubyte").exists():
        return None
    from torchvision.datasets import EMNIST

    ds = EMNIST(str(root), split="bymerge", train=train, download=False)
    # EMNIST stores every image transposed; turn them upright here, never in the model, so that a
    # user's upright PNG looks like the training data.
    upright = ds.data.transpose(1, 2).unsqueeze(1).contiguous()
    return ImageSet(ds.targets.long(), tuple(ds.classes), f"{root} (torchvision EMNIST bymerge)", _tensor=upright)


def decode_files(files: Sequence[str], mode: str) -> torch.Tensor:
    """Decode image files with Pillow into uint8 [N, C, H, W] (all files must share one size)."""
    from PIL import Image

    arrays = []
    for f in files:
        with Image.open(f) as im:
            arrays.append(np.asarray(im.convert(mode)))
    batch = np.stack(arrays)
    if batch.ndim == 3:
        batch = batch[..., None]
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def _image_folder(folder: Path, classes: Sequence[str], mode: str) -> ImageSet | None:
    """An ImageFolder tree <folder>/<class>/<image>; class folders must be the model's classes."""
    if not folder.is_dir():
        return None
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not found:
        return None
    if set(found) != set(classes):
        raise UsageError(f"{folder} holds class folders {found}, but the model needs {list(classes)}")
    files, labels = [], []
    for label, name in enumerate(classes):
        for p in sorted((folder / name).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                files.append(str(p))
                labels.append(label)
    return ImageSet(
        torch.tensor(labels, dtype=torch.int64),
        tuple(classes),
        f"{folder} (image folders)",
        _files=files,
        _decode=lambda fs: decode_files(fs, mode),
    )


def _cifar_torchvision(root: Path, train: bool) -> ImageSet | None:
    if not (root / "cifar-10-batches-py").is_dir():
        return None
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(root), train=train, download=False)
    except RuntimeError:  # failed checksum: treat as absent so other sources are tried
        return None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageSet(
        torch.tensor(ds.targets, dtype=torch.int64), tuple(ds.classes), f"{root} (torchvision CIFAR10)", _tensor=images
    )


def _cifar_folders(root: Path, train: bool) -> ImageSet | None:
    split = "train" if train else "test"
    for tree in (root / "CIFAR10-images", root):  # the shared layout, or a user's own ImageFolder tree
        found = _image_folder(tree / split, CIFAR10_CLASSES, "RGB")
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class DatasetInfo:
    title: str
    readers: tuple[Callable[[Path, bool], ImageSet | None], ...]
    download: Callable[[Path], None]
    how_to_get: str


def _download_fashion(root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)
    FashionMNIST(str(root), train=False, download=True)


def _download_emnist(root: Path) -> None:
    from torchvision.datasets import EMNIST

    EMNIST(str(root), split="bymerge", train=True, download=True)


def _download_cifar(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    CIFAR10(str(root), train=True, download=True)
    CIFAR10(str(root), train=False, download=True)


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "Fashion-MNIST",
        (_fashion_torchvision, _fashion_debian),
        _download_fashion,
        "or install Debian's dataset-fashion-mnist",
    ),
    "emnist-bymerge": DatasetInfo("EMNIST bymerge", (_emnist_torchvision,), _download_emnist, ""),
    "cifar10": DatasetInfo(
        "CIFAR-10",
        (_cifar_torchvision, _cifar_folders),
        _download_cifar,
        "or an ImageFolder tree with train/ and test/",
    ),
}


def search_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    roots = []
    if data_dir:
        roots.append(Path(data_dir))
    if os.environ.get("EDGECLS_DATA"):
        roots.append(Path(os.environ["EDGECLS_DATA"]))
    elif SHARED_SIBLING.is_dir():  # $EDGECLS_DATA, when set, names the data (the fast tests set an empty one)
        roots.append(SHARED_SIBLING)
    roots += [DEBIAN_DATASETS, cache_dir()]
    return roots


def load_split(dataset: str, split: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> ImageSet:
    """The `split` ("train" or "test") of `dataset`, from the first place that holds it."""
    info = DATASETS[dataset]
    train = split == "train"
    if data_dir and not Path(data_dir).is_dir():
        raise UsageError(f"--data-dir {data_dir} is not a folder")
    roots = search_roots(data_dir)
    for root in roots:
        for reader in info.readers:
            found = reader(root, train)
            if found is not None:
                return found
    target = Path(data_dir) if data_dir else cache_dir()
    reason = "downloads are off"
    if download and os.environ.get("EDGECLS_NO_DOWNLOAD") != "1":
        made = [p for p in (target, *target.parents) if not p.exists()]  # removed again if nothing arrives
        try:
            target.mkdir(parents=True, exist_ok=True)
            info.download(target)
            for reader in info.readers:
                found = reader(target, train)
                if found is not None:
                    return found
            reason = "the download left no readable files"
        except Exception as exc:  # network errors come in many types; all mean "not available"
            reason = f"download failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}"
        for folder in made:  # a failed download leaves no empty folders behind (deepest first)
            with contextlib.suppress(OSError):
                folder.rmdir()
    looked = ", ".join(str(r) for r in roots)
    raise UsageError(
        f"{info.title} not found (looked in {looked}; {reason}). Provide it with --data-dir DIR, "
        f"set EDGECLS_DATA=DIR {info.how_to_get}, or connect to the internet for a torchvision download."
    )


def load_for_spec(spec: ModelSpec, split: str, data_dir=None, download: bool = True) -> ImageSet:
    """The split with the spec's labels (e.g. EMNIST relabelled digit/letter)."""
    data = load_split(spec.dataset, split, data_dir, download)
    if spec.target == "digit-letter":
        data.labels = (data.labels >= 10).long()
        data.classes = spec.class_names
    return data


# ---------------------------------------------------------------- preprocessing and augmentation


def evenly_spaced(n: int, count: int) -> torch.Tensor:
    """`count` indices spread over range(n), so a class-sorted set (image folders) still gives every class."""
    return torch.linspace(0, n - 1, min(count, n)).round().long().unique()


def normalize(images: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 model input: scale to [0, 1], then (x - mean) / std per channel."""
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.to(torch.float32) * pre.scale - mean) / std


def _random_affine(images: torch.Tensor, degrees: float, gen: torch.Generator) -> torch.Tensor:
    n, c, h, w = images.shape

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * limit

    angle, scale = uniform(math.radians(degrees)), 1 + uniform(0.1)
    shift_x, shift_y = uniform(2 * 2 / w), uniform(2 * 2 / h)  # grid units: 2/w per pixel
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, [n, c, h, w], align_corners=False)
    out = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def augment(images: torch.Tensor, ops: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    """Batch augmentation on uint8 images: "hflip" (random mirror), "cropP" (pad P, random crop),
    "affineD" (per image: rotation up to ±D degrees, scale ±10 %, shift up to ±2 px; bilinear)."""
    n = images.shape[0]
    for op in ops:
        if op == "hflip":
            flip = torch.rand(n, generator=gen) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
        elif op.startswith("crop"):
            pad = int(op[4:])
            h, w = images.shape[2:]
            padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
            dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
            dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
            images = torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(zip(dy, dx))])
        elif op.startswith("affine"):
            images = _random_affine(images, float(op[6:]), gen)
        else:
            raise ValueError(f"unknown augmentation {op!r}")
    return images
