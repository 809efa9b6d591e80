"""The synthetic blob dataset shared by the tests and perf/gpu_check.py."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.data import find_cases, load_case
from lesionseg.data.synthetic import blob_pair, write_blob_dataset


def test_blob_dataset_is_a_folder_layout_of_bright_ellipses(tmp_path):
    root = write_blob_dataset(tmp_path / "blobs", n=5, size=32, seed=3)
    cases = find_cases(root, "folder")
    assert [c.id for c in cases] == [f"case{i:03d}" for i in range(5)]
    for case in cases:
        image, mask = load_case(case)
        assert image.shape == (32, 32, 3) and set(np.unique(mask)) == {0, 1}
        inside, outside = image[mask.astype(bool)].mean(0), image[~mask.astype(bool)].mean(0)
        assert (inside - outside > [120, 60, 20]).all()  # the lesion is the bright ellipse


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = write_blob_dataset(tmp_path / "a", n=3, size=16, seed=0)
    b = write_blob_dataset(tmp_path / "b", n=3, size=16, seed=0)
    c = write_blob_dataset(tmp_path / "c", n=3, size=16, seed=1)
    for name in ("images/case000.png", "masks/case002.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "masks/case000.png").read_bytes() != (c / "masks/case000.png").read_bytes()


def test_ids_sort_in_order_past_a_thousand_cases(tmp_path):
    root = write_blob_dataset(tmp_path / "many", n=1001, size=8)
    names = sorted(p.stem for p in (root / "images").iterdir())
    assert names[0] == "case0000" and names[-1] == "case1000" and len(names) == 1001


def test_blob_pair_of_any_shape():
    image, mask = blob_pair((20, 50), np.random.default_rng(0), centre=(0.5, 0.5), radii=(0.2, 0.2))
    assert image.shape == (20, 50, 3) and image.dtype == np.uint8 and mask.shape == (20, 50)
    assert mask[10, 25] == 1 and mask[0, 0] == 0


@pytest.mark.parametrize(("n", "size"), [(0, 32), (4, 4)])
def test_bad_arguments_are_refused(tmp_path, n, size):
    with pytest.raises(ValueError, match="write_blob_dataset needs"):
        write_blob_dataset(tmp_path, n=n, size=size)
