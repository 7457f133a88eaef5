#!/usr/bin/env bash
# What CI runs after the tests: the offline `dvc repro`, then `xtalbench diff` against the metrics
# committed on the base revision (default: the previous commit). Prints the table; exits non-zero
# when a gate regresses past its tolerance, fails an absolute threshold, or a required metric is
# missing. A missing base revision (first commit, shallow clone) is "no baseline": thresholds only.
#
# Environment: PYTHON (default: .venv/bin/python), XTALBENCH_BASE_REV (default: HEAD~1),
# DIFF_MD (Markdown copy of the table; default: a temp file), SKIP_REPRO=1 (diff only).
set -euo pipefail

cd "${XTALBENCH_ROOT:-$(dirname "$0")/..}"
export DVC_NO_ANALYTICS=1
PYTHON="${PYTHON:-.venv/bin/python}"
REV="${XTALBENCH_BASE_REV:-HEAD~1}"
DIFF_MD="${DIFF_MD:-${TMPDIR:-/tmp}/xtalbench-diff.md}"

if [ "${SKIP_REPRO:-0}" != "1" ]; then
  echo "== dvc repro (offline default)"
  "$PYTHON" -m dvc repro
fi

# Committed metrics that the repro changed mean the commit did not include its own results.
if git rev-parse --git-dir >/dev/null 2>&1; then
  stale="$(git status --porcelain -- dvc.lock metrics reports 2>/dev/null || true)"
  if [ -n "$stale" ]; then
    echo "note: dvc repro changed committed results (commit them with the code that changed them):"
    echo "$stale"
  fi
fi

echo "== xtalbench diff --rev $REV"
status=0
"$PYTHON" -m xtalbench diff --rev "$REV" --md "$DIFF_MD" || status=$?
echo "(Markdown table: $DIFF_MD)"
if [ "$status" -ne 0 ]; then
  echo "FAIL: a metric regressed past its gate (see the table above and params.yaml \`gates\`)" >&2
fi
exit "$status"
