import gzip

import pytest
import torch
from conftest import cifar_test_images, find_test_data

from edgecls.data import augment, decode_files, load_for_spec, load_split
from edgecls.errors import EdgeclsError
from edgecls.registry import CIFAR10_CLASSES, EMNIST_BYMERGE_CLASSES, FASHION_MNIST_CLASSES, get_spec


@pytest.mark.parametrize(
    "dataset, split, count, classes",
    [
        ("fashion-mnist", "train", 60_000, FASHION_MNIST_CLASSES),
        ("fashion-mnist", "test", 10_000, FASHION_MNIST_CLASSES),
        # the shared copy re-splits the official bymerge test split; a torchvision download has the official splits
        ("emnist-bymerge", "train", (100_000, 697_932), EMNIST_BYMERGE_CLASSES),
        ("emnist-bymerge", "test", (16_323, 116_323), EMNIST_BYMERGE_CLASSES),
        ("cifar10", "train", 50_000, CIFAR10_CLASSES),
        ("cifar10", "test", 10_000, CIFAR10_CLASSES),
    ],
)
def test_real_split_counts_classes_and_ranges(data_root, dataset, split, count, classes):
    data = load_split(dataset, split)
    assert len(data) in (count if isinstance(count, tuple) else (count,))
    count = len(data)
    assert tuple(data.classes) == tuple(classes)
    assert set(data.labels.unique().tolist()) == set(range(len(classes)))
    sample = data.images(torch.arange(0, count, count // 50))
    channels, side = (3, 32) if dataset == "cifar10" else (1, 28)
    assert sample.dtype == torch.uint8 and sample.shape[1:] == (channels, side, side)
    assert sample.min() == 0 and sample.max() >= 250  # real pixels span the whole range


def test_cifar_balanced_ten_classes(data_root):
    counts = torch.bincount(load_split("cifar10", "test").labels)
    assert counts.tolist() == [1000] * 10


def test_emnist_images_are_upright(data_root):
    """How we know: in the mean image of '7' the bar at the top holds over twice the ink of the bottom
    rows, and the mean 'L' has more ink in its bottom bar than at the top. The same test run on the raw
    (transposed) files fails, so it does tell the two orientations apart."""
    data = load_split("emnist-bymerge", "test")

    def mean_of(char, images):
        return images[data.labels == EMNIST_BYMERGE_CLASSES.index(char), 0].float().mean(0)

    def looks_upright(images):
        ell, seven = mean_of("L", images), mean_of("7", images)
        return bool(seven[2:9].sum() > 2 * seven[19:26].sum() and ell[19:26].sum() > 1.4 * ell[2:9].sum())

    assert looks_upright(data.images())
    assert not looks_upright(data.images().transpose(2, 3))  # the raw EMNIST orientation


def test_digit_letter_relabelling(data_root):
    data = load_for_spec(get_spec("lstm-binary"), "test")
    raw = load_split("emnist-bymerge", "test")
    assert data.classes == ("digit", "letter")
    assert torch.equal(data.labels, (raw.labels >= 10).long())
    assert 0.2 < data.labels.float().mean() < 0.8


def test_debian_gzip_layout_reads_like_torchvision(data_root, tmp_path):
    """Debian's dataset-fashion-mnist ships <root>/fashion-mnist/*.gz; our reader must match torchvision's."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    reference = load_split("fashion-mnist", "test")
    images, labels = reference.images()[:, 0].numpy(), reference.labels.numpy().astype("uint8")
    for name, array, kind in (("t10k-images-idx3-ubyte", images, 3), ("t10k-labels-idx1-ubyte", labels, 1)):
        header = bytes([0, 0, 8, kind]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(folder / f"{name}.gz", "wb") as dst:  # IDX, as Debian's package holds it
            dst.write(header + array.tobytes())
    from edgecls.data import _fashion_debian

    debian = _fashion_debian(tmp_path, train=False)
    assert torch.equal(debian.images(), reference.images()) and torch.equal(debian.labels, reference.labels)


def test_user_image_folder_tree_is_a_source(data_root, tmp_path):
    """--data-dir pointing at <dir>/{train,test}/<class>/ with the model's classes."""
    cifar_test_images(tmp_path / "test", 3)
    data = load_split("cifar10", "test", data_dir=tmp_path, download=False)
    assert len(data) == 30 and data.source.startswith(str(tmp_path))
    assert torch.equal(data.images(), decode_files(data.files, "RGB"))


def test_user_tree_with_other_classes_is_refused(tmp_path):
    (tmp_path / "train" / "cats").mkdir(parents=True)
    with pytest.raises(EdgeclsError, match="class folders"):
        load_split("cifar10", "train", data_dir=tmp_path, download=False)


def test_missing_data_names_every_way_to_provide_it(tmp_path, monkeypatch):
    import edgecls.data

    monkeypatch.delenv("EDGECLS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(edgecls.data, "SHARED_SIBLING", tmp_path / "no-shared")
    with pytest.raises(EdgeclsError) as err:
        load_split("emnist-bymerge", "train", data_dir=tmp_path, download=False)
    msg = str(err.value)
    assert "EMNIST bymerge not found" in msg
    assert "--data-dir" in msg and "EDGECLS_DATA" in msg and "internet" in msg and "\n" not in msg


@pytest.mark.parametrize("ops", [["hflip"], ["crop2"], ["affine10"], ["affine10", "crop2"]])
def test_augmentations_are_seeded_and_keep_the_picture(data_root, ops):
    images = load_split("emnist-bymerge", "test", download=False).images(torch.arange(64))

    def run(seed):
        return augment(images, ops, torch.Generator().manual_seed(seed))

    a = run(0)
    assert a.shape == images.shape and a.dtype == torch.uint8
    assert torch.equal(a, run(0)) and not torch.equal(a, run(1))
    # Small moves only: ink mass and its vertical centre (which a mirror keeps) stay near the original's.
    ink, moved = images.float().sum((1, 2, 3)), a.float().sum((1, 2, 3))
    assert ((moved - ink).abs() / ink).max() < 0.25
    rows = torch.arange(28.0).view(1, 1, 28, 1)
    centre = (images.float() * rows).sum((1, 2, 3)) / ink
    assert ((a.float() * rows).sum((1, 2, 3)) / moved - centre).abs().max() < 4.0


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), ["rotate"], torch.Generator())


def test_without_shared_data_the_tests_use_the_cli_locator(data_root, tmp_path, monkeypatch):
    """No $EDGECLS_DATA and no ../shared: the data sets are found where the CLI looks next (here the user
    cache, filled as a torchvision download would fill it); with none anywhere, the locator's one line."""
    shared = data_root or find_test_data()
    cache = tmp_path / "cache" / "edgecls" / "data"
    cache.mkdir(parents=True)
    for name in ("FashionMNIST", "EMNIST", "CIFAR10-images"):
        (cache / name).symlink_to((shared / name).resolve())  # read-only use: nothing is written through these links
    monkeypatch.delenv("EDGECLS_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("edgecls.data.DEBIAN_DATASETS", tmp_path / "no-debian")
    monkeypatch.setattr("edgecls.data.SHARED_SIBLING", tmp_path / "no-shared")
    assert find_test_data() is None
    assert str(cache) in load_split("emnist-bymerge", "test").source
    for name in ("FashionMNIST", "EMNIST", "CIFAR10-images"):
        (cache / name).unlink()
    monkeypatch.setenv("EDGECLS_NO_DOWNLOAD", "1")
    with pytest.raises(EdgeclsError, match="not found .*downloads are off"):
        find_test_data()


def test_a_failed_download_leaves_no_empty_folder(tmp_path, monkeypatch):
    import edgecls.data

    def offline(target):
        raise OSError("network unreachable")

    monkeypatch.delenv("EDGECLS_DATA", raising=False)
    monkeypatch.delenv("EDGECLS_NO_DOWNLOAD", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(edgecls.data, "SHARED_SIBLING", tmp_path / "no-shared")
    import dataclasses

    info = dataclasses.replace(edgecls.data.DATASETS["fashion-mnist"], download=offline)
    monkeypatch.setitem(edgecls.data.DATASETS, "fashion-mnist", info)
    with pytest.raises(EdgeclsError, match="download failed: network unreachable"):
        load_split("fashion-mnist", "train")
    assert list(tmp_path.iterdir()) == []  # not even the cache folder


def test_a_sibling_shared_data_folder_is_looked_in_when_no_data_is_named(tmp_path, monkeypatch):
    import edgecls.data

    shared = tmp_path / "shared" / "datasets"
    shared.mkdir(parents=True)
    monkeypatch.setattr(edgecls.data, "SHARED_SIBLING", shared)
    monkeypatch.delenv("EDGECLS_DATA", raising=False)
    roots = edgecls.data.search_roots(tmp_path / "given")
    assert roots[:3] == [tmp_path / "given", shared, edgecls.data.DEBIAN_DATASETS]
    monkeypatch.setenv("EDGECLS_DATA", str(tmp_path / "mine"))  # set, it names the data: no sibling
    assert edgecls.data.search_roots(None)[:2] == [tmp_path / "mine", edgecls.data.DEBIAN_DATASETS]
