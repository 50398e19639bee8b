"""The GPU machine's package pack: cut into pieces here, put back together there one call at a time."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np

from bench.common import REPO
from bench.device_pack import image_packages, requirement_name, write_pieces


def test_pieces_carried_one_call_at_a_time_unpack_to_the_site(tmp_path):
    site = tmp_path / "site"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("VALUE = 7\n")
    (site / "pkg" / "blob.bin").write_bytes(np.random.default_rng(0).bytes(300_000))  # xz cannot shrink it
    pieces = write_pieces(site, tmp_path / "pack", piece_bytes=100_000)
    assert [p.name for p in pieces] == ["1-of-4", "2-of-4", "3-of-4", "4-of-4"]

    # the device's checkout: the script, and in each call only the piece that call carries
    checkout = tmp_path / "checkout"
    (checkout / "bench").mkdir(parents=True)
    shutil.copy(REPO / "bench" / "gpu_device.sh", checkout / "bench")
    env = {**os.environ, "DEVPACK_TMP": str(tmp_path / "machine"), "OUT": str(tmp_path / "out")}
    for k, piece in enumerate(pieces, start=1):
        shutil.rmtree(checkout / ".devpack", ignore_errors=True)
        (checkout / ".devpack").mkdir()
        shutil.copy(piece, checkout / ".devpack")
        call = subprocess.run(["bash", str(checkout / "bench" / "gpu_device.sh")], env=env, capture_output=True,
                              text=True, timeout=60)
        if k < len(pieces):
            assert call.returncode == 0 and f"pack: {k} of 4 pieces in" in call.stdout, call.stdout + call.stderr
    # the last call unpacks (what follows, the benchmark, needs a real checkout and GPU machine)
    assert "pack unpacked" in call.stdout, call.stdout + call.stderr
    unpacked = tmp_path / "machine" / "medgan-site" / "pkg"
    assert (unpacked / "blob.bin").read_bytes() == (site / "pkg" / "blob.bin").read_bytes()
    assert (unpacked / "__init__.py").read_text() == "VALUE = 7\n"


def test_what_the_image_has_is_named_as_requirements_name_it():
    image = image_packages()
    assert {"torch", "numpy", "pyarrow", "torchmetrics"} <= image and not {"ray", "mlflow", "pydicom"} & image
    assert requirement_name("ray[default,tune,train]>=2.50,<2.61") == "ray"
    assert requirement_name("torch-fidelity>=0.3,<0.5") == requirement_name("torch_fidelity") == "torch-fidelity"
