"""Real sample images for a fresh clone: evenly spaced test images of each data set, written as image
files whose names carry their true label (`samples/<dataset>/<index>_<label>.<ext>`).

Torch-free readers (`sample_files`, `label_of`) so the runtime tests and the main script can use them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from edgecls.registry import EMNIST_BYMERGE_CLASSES, all_specs

DATASET_FOLDERS = {"fashion-mnist": "fashion-mnist", "emnist-bymerge": "emnist", "cifar10": "cifar10"}
PER_DATASET = {"fashion-mnist": 50, "emnist-bymerge": 94, "cifar10": 50}


def slug(label: str) -> str:
    """A file-name-safe label ("T-shirt/top" -> "T-shirt-top"); case is kept (EMNIST 'a' vs 'A')."""
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")


def samples_root() -> Path:
    repo = Path(__file__).resolve().parents[1] / "samples"
    return repo if repo.is_dir() else Path("samples")


def sample_files(dataset: str, root: str | Path | None = None) -> list[Path]:
    folder = Path(root or samples_root()) / DATASET_FOLDERS[dataset]
    return sorted(p for p in folder.glob("*_*.*") if p.is_file())


def label_of(path: str | Path, class_names: tuple[str, ...], target: str | None = None) -> int:
    """The true class index written into a sample's file name, in the labelling of a model."""
    label = Path(path).stem.split("_", 1)[1]
    if target == "digit-letter":  # files carry the EMNIST class; digits are its first ten
        return int([slug(c) for c in EMNIST_BYMERGE_CLASSES].index(label) >= 10)
    return [slug(c) for c in class_names].index(label)


def write_samples(out: str | Path = "samples", data_dir: str | None = None) -> dict[str, int]:
    """Write the sample folders from the real test splits; returns images written per data set."""
    from PIL import Image

    from edgecls.data import evenly_spaced, load_split
    from edgecls.fileio import atomic_path

    specs = {s.dataset: s for s in all_specs() if s.target is None}
    written = {}
    for dataset, folder_name in DATASET_FOLDERS.items():
        test = load_split(dataset, "test", data_dir, download=False)
        names = [slug(c) for c in specs[dataset].class_names]
        idx = evenly_spaced(len(test), PER_DATASET[dataset])
        folder = Path(out) / folder_name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for i in idx.tolist():
            label = names[int(test.labels[i])]
            if test.files is not None:  # image files (CIFAR-10 JPEGs): the original bytes
                src = Path(test.files[i])
                shutil.copyfile(src, folder / f"{i:05d}_{label}{src.suffix.lower()}")
                continue
            pixels = test.images(idx.new_tensor([i]))[0].permute(1, 2, 0).numpy()
            image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
            with atomic_path(folder / f"{i:05d}_{label}.png") as tmp:
                image.save(tmp, format="PNG", optimize=True)
        written[dataset] = len(idx)
    return written


def check_samples(names: list[str] | None = None, provider: str = "auto") -> list[dict]:
    """Classify each model's sample folder with its shipped ONNX file (ONNX Runtime only)."""
    from edgecls.locations import find_onnx
    from edgecls.registry import get_spec
    from edgecls.runtime import Classifier

    rows = []
    for spec in [get_spec(n) for n in names] if names else all_specs():
        files, onnx_path = sample_files(spec.dataset), find_onnx(spec.name)
        if not onnx_path.is_file():
            print(f"{spec.name:12} no model.onnx (neither shipped nor exported); train and export it yourself")
            continue
        classifier = Classifier(onnx_path, provider)
        labels, _ = classifier.predict(files)
        right = sum(
            spec.class_names.index(lab) == label_of(f, spec.class_names, spec.target) for f, lab in zip(files, labels)
        )
        acc = classifier.info.test_accuracy
        rows.append(
            {
                "model": spec.name,
                "right": right,
                "images": len(files),
                "onnx": str(classifier.path),
                "test_accuracy": acc,
            }
        )
        print(
            f"{spec.name:12} {right:3d}/{len(files)} sample images right ({100 * right / len(files):5.1f} %); "
            f"test accuracy {100 * acc:.2f} %; {classifier.path}"
        )
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="write: samples/ from the real test splits; check: classify "
        "them with the shipped models; folder MODEL: a model's folder."
    )
    parser.add_argument("action", choices=["write", "check", "folder"])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--out", default="samples")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    from edgecls.errors import EdgeclsError
    from edgecls.registry import get_spec

    try:
        if args.action == "write":
            print(write_samples(args.out, args.data_dir))
        elif args.action == "check":
            check_samples()
        else:
            print(samples_root() / DATASET_FOLDERS[get_spec(args.model or "").dataset])
    except EdgeclsError as exc:
        raise SystemExit(f"error: {exc}") from None
