#!/usr/bin/env bash
# The same local sweep on an earlier commit and on this checkout, one after the other, with wall-clock times and
# each job's summed seconds: how much a change to the harness saves a real sweep.
#
#   benchmarks/sweep_compare.sh <earlier commit> [resolution] [overrides for this checkout's run...]
#   benchmarks/sweep_compare.sh 3421463^ 128 batch_size=4
#
# The sweep is `-m inversion=ddim editor=direct,p2p,masactrl` on the mini benchmark (issue 19's measurement). Run it
# on an otherwise idle machine; the earlier commit is checked out in a temporary worktree, removed afterwards.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
before=${1:?usage: $0 <earlier commit> [resolution] [overrides...]}
resolution=${2:-512}
shift $(( $# < 2 ? $# : 2 ))
scratch=$(mktemp -d /tmp/invbench-sweep-compare.XXXXXX)
trap 'git -C "$here" worktree remove --force "$scratch/before" >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
git -C "$here" worktree add --detach "$scratch/before" "$before" >/dev/null
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled
sweep=(-m inversion=ddim editor=direct,p2p,masactrl "model.resolution=$resolution")
for side in before now; do
    launch="$here/launch.py"; extra=("$@")
    if [ "$side" = before ]; then launch="$scratch/before/launch.py"; extra=(); fi
    start=$(date +%s.%N)
    (cd "$scratch" && python "$launch" "${sweep[@]}" "${extra[@]}" "hydra.sweep.dir=$scratch/$side" >"$scratch/$side.log" 2>&1)
    end=$(date +%s.%N)
    echo "$side: wall $(python -c "print(f'{$end - $start:.1f}')") s ${extra[*]}"
done
python - "$scratch" <<'EOF'
import json, sys
from pathlib import Path
for side in ("before", "now"):
    for results in sorted(Path(sys.argv[1], side).glob("*/results.jsonl")):
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        total = lambda key: sum(row.get(key, 0) for row in rows)
        reused = sum(bool(row.get("inversion_reused")) for row in rows)
        print(f"{side} {results.parent.name}: inversion {total('inversion_seconds'):.1f} s, edit "
              f"{total('edit_seconds'):.1f} s, metrics {total('metrics_seconds'):.1f} s, {reused} inversions reused")
EOF
