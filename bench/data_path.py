"""3. Data path: cold DICOM ingest vs cache load, and a trial's data load on a 2-node local cluster.

Ingest: the default phantom PET cohort (the laptop preset's: whole series and nodules.csv,
cropped around each nodule at 32 px) written as DICOM, ingested with an empty cache (read +
check + assemble series + crop + split + write the cache), then again (fingerprint the files +
open the cache): the cold ingest is the baseline. Beside it, the whole-slice layout the
phantom wrote before (targeted 256 px slices + labels.csv, ingested at 256 px). Trial data load: the sweep `ray.put`s the cohort arrays once
on the driver's node and every trial's worker `ray.get`s them; here a task pinned to the
driver's node (baseline) and one pinned to the second node each get a fresh copy and touch
every pixel. Both nodes are on this machine, so the transfer crosses Ray's object manager
over loopback, not a network.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.common import Section
from orchestrator.config import load_config
from orchestrator.data.ingest import ingest
from orchestrator.data.phantom import write_phantom_cohort


def timed_ingest(data: Path, cfg):
    started = time.perf_counter()
    cohort = ingest(data, cfg)  # finds nodules.csv or labels.csv
    _ = float(cohort.images[-1].sum())  # touch the data: a memory map alone proves nothing
    return time.perf_counter() - started, cohort


def trial_load_seconds(arrays: dict, repeats: int) -> tuple[float, float]:
    """Median seconds for a task on the driver's node and on a second node to get and touch the arrays."""
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    store = 2 * sum(a.nbytes for a in arrays.values()) + 2**28
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": store,
                                                           "include_dashboard": False})
    second = cluster.add_node(num_cpus=1, object_store_memory=store)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        @ray.remote(num_cpus=1)
        def load(data: list) -> float:
            started = time.perf_counter()
            got = ray.get(data[0])
            _ = sum(float(a.sum()) for a in got.values() if a.dtype.kind == "f")
            return time.perf_counter() - started

        def median_on(node_id: str) -> float:
            strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
            # a fresh object each time: a node keeps a copy it has fetched once
            return statistics.median(ray.get(load.options(scheduling_strategy=strategy).remote([ray.put(arrays)]))
                                     for _ in range(repeats))

        return median_on(cluster.head_node.node_id), median_on(second.node_id)
    finally:
        ray.shutdown()
        cluster.shutdown()


def measure(quick: bool) -> Section:
    patients = 100 if quick else 500
    laptop = load_config("pet", "laptop").data
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        write_phantom_cohort(folder / "series", patients=laptop.phantom_patients, modality="pet",
                             slices=laptop.phantom_slices)
        crops_cfg = replace(laptop, cache_dir=str(folder / "cache"))
        crops_cold_s, crops = timed_ingest(folder / "series", crops_cfg)
        crops_warm_s, _ = timed_ingest(folder / "series", crops_cfg)
        files = sum(1 for _ in (folder / "series").rglob("*.dcm"))
        write_phantom_cohort(folder / "slices", patients=patients, modality="pet", size=256, slices=4,
                             layout="slices")
        cfg = replace(load_config("pet").data, cache_dir=str(folder / "cache"))  # the full preset: 256 px
        cold_s, cohort = timed_ingest(folder / "slices", cfg)
        warm_s, again = timed_ingest(folder / "slices", cfg)
        assert not cohort.from_cache and again.from_cache and len(again.labels) == len(cohort.labels)
        arrays = again.as_arrays()
    n = len(cohort.labels)
    megabytes = sum(a.nbytes for a in arrays.values()) / 2**20
    local_s, remote_s = trial_load_seconds(arrays, repeats=3)
    return Section(
        title="3. Data path (ingest vs cache; a trial's data load on a 2-node cluster)",
        method=__doc__.split("\n\n", 1)[1].strip() + f"\n\nDefault cohort: {laptop.phantom_patients} patients, "
        f"{files} series files, {len(crops.labels)} crops at {laptop.size} px. Whole slices: {n} slices at "
        f"{cfg.size} px ({megabytes:.0f} MiB of arrays).",
        rows=[{"step": "default cohort: cold ingest of series + crops (baseline)", "s": crops_cold_s,
               "files / s": files / crops_cold_s},
              {"step": "default cohort: cache load", "s": crops_warm_s, "files / s": files / crops_warm_s},
              {"step": "whole slices: cold DICOM ingest", "s": cold_s, "files / s": n / cold_s},
              {"step": "whole slices: cache load", "s": warm_s, "files / s": n / warm_s},
              {"step": "trial data load, same node (baseline)", "s": local_s, "MiB / s": megabytes / local_s},
              {"step": "trial data load, second node", "s": remote_s, "MiB / s": megabytes / remote_s}],
        ratios={"default cohort: cold ingest / cache load": crops_cold_s / crops_warm_s,
                "whole slices: cold ingest / cache load": cold_s / warm_s,
                "trial data load, second node / same node": remote_s / local_s})
