"""The sweep's stages: gan (search), synth (synthetic sets + audit), classify (utility grid)."""
import ray


def cluster_has_gpus() -> bool:
    """Whether the Ray cluster the sweep runs on has a whole GPU: unset GPU settings follow this."""
    return ray.cluster_resources().get("GPU", 0) >= 1
