"""`cluster.yaml` is valid for the installed Ray's autoscaler and keeps the cluster closed."""
from __future__ import annotations

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).parents[1] / "cluster.yaml"


def load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_validates_against_rays_schema_offline():
    config = prepare_config(load())
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    worker = config["available_node_types"]["gpu_worker"]
    assert worker["node_config"]["InstanceType"].startswith("g5") and worker["max_workers"] >= worker["min_workers"] >= 1


def test_only_ssh_is_open_to_the_world():
    permissions = load()["provider"]["security_group"]["IpPermissions"]
    assert [(p["FromPort"], p["ToPort"]) for p in permissions] == [(22, 22)]


def test_services_listen_on_localhost_only():
    head = "\n".join(load()["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "mlflow server" in head and "--host 127.0.0.1" in head and "--host 0.0.0.0" not in head
    assert "MLFLOW_ARTIFACTS=s3://" in head and "--artifacts-destination $MLFLOW_ARTIFACTS" in head


def test_mlflow_records_default_to_sqlite_and_can_live_in_postgresql():
    config = load()
    head = "\n".join(config["head_start_ray_commands"])
    assert "MLFLOW_BACKEND=sqlite:///$HOME/mlflow.db" in head and "--backend-store-uri $MLFLOW_BACKEND" in head
    assert any("psycopg2-binary" in c for c in config["setup_commands"])  # the driver a postgresql:// URI needs
    assert "password" not in head.lower() and "MLFLOW_BACKEND=postgresql://" in CLUSTER_YAML.read_text()


def test_s3_access_is_an_instance_profile_never_keys():
    text = CLUSTER_YAML.read_text().lower()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "secretaccesskey", "accesskeyid"):
        assert secret not in text
    for node in load()["available_node_types"].values():
        assert node["node_config"]["IamInstanceProfile"]


def test_every_node_installs_this_checkout():
    config = load()
    assert config["file_mounts"] == {"~/medgan-sweep": "."}
    assert any("pip install" in c and "-e ~/medgan-sweep" in c for c in config["setup_commands"])
