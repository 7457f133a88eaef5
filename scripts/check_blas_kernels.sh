#!/usr/bin/env bash
# On demand (not in CI): do fetch → dedup → featurize → split give the same outputs under two
# OpenBLAS kernels? numpy's OpenBLAS picks its kernel by CPU; OPENBLAS_CORETYPE forces one, so
# this one machine stands in for two kinds of machine. Each kernel runs the stages in its own
# temporary copy of the project (params.yaml + ../shared beside it), then every output file is
# compared: Parquet and PNG byte for byte, JSON after dropping the keys that record when or how
# fast a run was (VOLATILE below), which are not results. Exits 1 when any output differs.
#
#   scripts/check_blas_kernels.sh                 # mp20 and mp-frames, Haswell vs SkylakeX
#   DATASETS="mp20" KERNELS="Haswell Zen" scripts/check_blas_kernels.sh
#   KEEP=1 scripts/check_blas_kernels.sh          # keep the temp dirs for a look
#
# Cost: ~3.5 CPU minutes in all (both kernels, both datasets; 8.7 min wall on a busy 2-core
# machine). Last run: 42 outputs, 0 differ between Haswell and SkylakeX.
# Environment: PYTHON (default: .venv/bin/python), DATASETS, KERNELS, KEEP, TMPDIR.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
DATASETS="${DATASETS:-mp20 mp-frames}"
KERNELS="${KERNELS:-Haswell SkylakeX}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/xtalbench-blas.XXXXXX")"
[ "${KEEP:-0}" = "1" ] || trap 'rm -rf "$WORK"' EXIT
export DVC_NO_ANALYTICS=1 PYTHONHASHSEED=0

for kernel in $KERNELS; do
  run="$WORK/$kernel"
  mkdir -p "$run/repo"
  ln -s "$(cd "$ROOT/.." && pwd)/shared" "$run/shared"   # params.yaml paths are ../shared/data/...
  cp "$ROOT/params.yaml" "$run/repo/"
  for dataset in $DATASETS; do
    echo "== $kernel: $dataset"
    for stage in "fetch $dataset" "dedup $dataset --sweep --no-progress" "featurize $dataset" "split $dataset"; do
      # shellcheck disable=SC2086
      (cd "$run/repo" && OPENBLAS_CORETYPE="$kernel" nice -n 10 "$PYTHON" -m xtalbench $stage >>"$run/log.txt" 2>&1) \
        || { echo "xtalbench $stage failed under $kernel:"; tail -20 "$run/log.txt"; exit 2; }
    done
  done
done

"$PYTHON" - "$WORK" $KERNELS <<'EOF'
"""Compare every output of the first kernel's run with every other kernel's."""
import hashlib
import json
import sys
from pathlib import Path

VOLATILE = {"fetched_at", "seconds", "elapsed_s", "wall_s", "peak_rss_mb", "peak_rss_gb", "structures_per_s"}


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in VOLATILE and not k.endswith(("_seconds", "_per_s", "_per_second"))}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def digest(path: Path) -> str:
    if path.suffix == ".json":
        return hashlib.md5(json.dumps(strip(json.loads(path.read_text())), sort_keys=True).encode()).hexdigest()
    return hashlib.md5(path.read_bytes()).hexdigest()


work, kernels = Path(sys.argv[1]), sys.argv[2:]
outputs = lambda k: {p.relative_to(work / k / "repo"): p for p in sorted((work / k / "repo").rglob("*")) if p.is_file() and p.name != "params.yaml"}
reference = outputs(kernels[0])
bad = 0
for other in kernels[1:]:
    theirs = outputs(other)
    for rel in sorted(set(reference) | set(theirs)):
        a = digest(reference[rel]) if rel in reference else "missing"
        b = digest(theirs[rel]) if rel in theirs else "missing"
        same = a == b
        bad += not same
        print(f"{'same' if same else 'DIFFERS':8} {a[:8]} {b[:8]}  {rel}")
print(f"\n{len(reference)} outputs, {bad} differ between {' and '.join(kernels)}")
sys.exit(1 if bad else 0)
EOF
