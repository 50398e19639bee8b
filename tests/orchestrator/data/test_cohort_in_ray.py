"""The cache is what Ray trials load: put once by the driver, read zero-copy by any worker."""
from __future__ import annotations

import numpy as np
import pytest
import ray

from orchestrator.data.ingest import ingest
from trainables.cohort import TRAIN


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@ray.remote
def summarise(arrays: dict) -> dict:
    """Runs in a Ray worker process: what a trial does with the handle it is given."""
    images = arrays["images"]
    train = arrays["split"] == TRAIN
    return {
        "shape": images.shape,
        "train_sum": float(images[train].astype(np.float64).sum()),
        "read_only": not images.flags.writeable,  # zero-copy view of the object store
        "dtypes": {k: str(v.dtype) for k, v in arrays.items()},
    }


@pytest.mark.slow
def test_a_ray_worker_reads_the_cohort_from_the_object_store(local_ray, phantom_dir, data_cfg):
    cohort = ingest(phantom_dir, data_cfg, labels_file=phantom_dir / "labels.csv")
    ref = ray.put(cohort.as_arrays())  # once per sweep; trials get the ref, not the data

    seen = ray.get(summarise.remote(ref))

    train_images, _ = cohort.subset("train")
    assert seen["shape"] == cohort.images.shape
    assert seen["train_sum"] == pytest.approx(float(train_images.astype(np.float64).sum()))
    assert seen["read_only"]
    assert all(kind != "object" and not kind.startswith("<U") for kind in seen["dtypes"].values())
