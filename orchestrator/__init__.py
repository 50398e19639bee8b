"""The driver side of medgan-sweep.

Environment that Ray and MLflow read is set here, before either is imported by any module of
the package (a setting made after the import may never be read).
"""
import os

# MLflow's client retries a dead server for minutes by default, holding up Tune's loop (and so
# training) on every write: fail fast instead; the tracker spools what it cannot write.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # explicit, as Ray's Tune-over-Train guide asks
for _key, _value in MLFLOW_HTTP_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
