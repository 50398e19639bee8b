"""The memorisation audit's similarity: nearest images by normalised correlation."""
from __future__ import annotations

import numpy as np
import torch

from trainables.metrics import nearest_correlation


def test_a_copy_is_found_exactly_even_rescaled_and_other_images_are_not_close():
    gen = torch.Generator().manual_seed(0)
    references = torch.rand(50, 16, 16, generator=gen)
    queries = torch.stack([references[7] * 0.5 + 0.2, torch.rand(16, 16, generator=gen)])
    r, index = nearest_correlation(queries, references)
    assert index[0] == 7 and r[0] > 0.999999
    assert r[1] < 0.5  # noise images are nearly uncorrelated


def test_groups_keep_a_patient_from_matching_its_own_slices():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(6, 8, 8, generator=gen)
    images[1] = images[0]  # patient a's two slices are identical
    patients = np.array(["a", "a", "b", "b", "c", "c"])
    r, index = nearest_correlation(images, images, patients, patients)
    assert patients[index[0]] != "a" and r[0] < 0.999
    assert all(patients[i] != p for i, p in zip(index.tolist(), patients))


def test_chunking_changes_nothing():
    gen = torch.Generator().manual_seed(2)
    q, ref = torch.rand(37, 8, 8, generator=gen), torch.rand(23, 8, 8, generator=gen)
    full, chunked = nearest_correlation(q, ref), nearest_correlation(q, ref, chunk=5)
    torch.testing.assert_close(full[0], chunked[0])  # BLAS may round a block differently
    assert torch.equal(full[1], chunked[1])
