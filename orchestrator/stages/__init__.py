"""The sweep's stages: gan (search), synth (synthetic sets + audit), classify (utility grid)."""
import ray

# Tune runs a new trial in the process of a finished one (same resources): that saves starting
# a Python process that imports torch, about 4 s a trial on 2 cores (bench/overhead.py). Safe
# because the training loops seed everything they draw from.
REUSE_ACTORS = True


def cluster_has_gpus() -> bool:
    """Whether the Ray cluster the sweep runs on has a whole GPU: unset GPU settings follow this."""
    return ray.cluster_resources().get("GPU", 0) >= 1
