#!/usr/bin/env bash
# On the lent GPU machine (device tool): keep this call's piece of the package pack that
# `python -m bench.device_pack` wrote here, and once every piece is in, unpack them and run
# `python -m bench.gpu` with this script's arguments, its section and log written to $OUT.
# /tmp outlives a call only while the machine stays warm (30 s idle): make the calls one after
# the other. A fresh machine starts over: every piece again.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=${DEVPACK_TMP:-/tmp}  # another folder only for the test of this script
keep=$tmp/medgan-devpack site=$tmp/medgan-site out=${OUT:-$tmp/medgan-out}
mkdir -p "$keep" "$out"

if [ ! -d "$site" ]; then
  cp .devpack/*-of-* "$keep"/ 2>/dev/null || true
  pieces=$(ls "$keep")
  [ -n "$pieces" ] || { echo "no piece of the pack here: carry .devpack/K-of-N (python -m bench.device_pack)"; exit 2; }
  total=${pieces##*-of-}; total=${total%%$'\n'*}
  have=$(echo "$pieces" | wc -l)
  if [ "$have" -lt "$total" ]; then
    echo "pack: $have of $total pieces in; make the next call now, carrying the next piece"
    exit 0
  fi
  mkdir -p "$site.partial"
  for k in $(seq 1 "$total"); do cat "$keep/$k-of-$total"; done | tar -xJf - -C "$site.partial"
  mv "$site.partial" "$site"
  echo "pack unpacked: $(du -sh "$site" | cut -f1) in $site"
fi

# Ray's workers inherit the environment: the packages and this checkout on their path too.
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi here"
python3 -c "import torch, ray, ray.train, ray.tune, mlflow, optuna, pydicom, SimpleITK
print('python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      'ray', ray.__version__, 'mlflow', mlflow.__version__)"
python3 -m bench.gpu --out "$out/gpu.md" "$@" 2>&1 | tee "$out/gpu.log"
