#!/usr/bin/env bash
# Scale of one machine: synth + train of N requests x 20 partners, wall time and peak memory.
# Usage: bench/train_scale.sh [REQUESTS] [WORKDIR]   (default 1000000, a fresh temp dir)
# Prints a Markdown table row per step and the model's test metrics; nothing is left behind
# except WORKDIR when you name it.
set -euo pipefail
requests="${1:-1000000}"
workdir="${2:-$(mktemp -d)}"
bidfilter="${BIDFILTER:-bidfilter}"
mkdir -p "$workdir"
measure() {  # name, command...: runs it under GNU time, prints "| name | wall s | peak MiB |"
  local name="$1"; shift
  /usr/bin/time -f "%e %M" -o "$workdir/$name.time" "$@" > "$workdir/$name.json" 2> "$workdir/$name.log"
  read -r wall kib < "$workdir/$name.time"
  printf '| %s | %.0f s | %.0f MiB |\n' "$name" "$wall" "$((kib / 1024))"
}
echo "| step | wall time | peak RSS |"
echo "|---|---|---|"
measure synth "$bidfilter" synth --requests "$requests" --partners 20 --seed 1 --out "$workdir/logs" --json
measure train "$bidfilter" train --logs "$workdir/logs" --store "$workdir/store" --json
python3 - "$workdir/train.json" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
test = result["test"]
print()
print(f"trees {result['trees']}; test AUC {test['auc']:.4f}, bid recall {test['bid_recall']:.4f},"
      f" call savings {test['call_savings']:.4f}, oracle call savings {test['oracle_call_savings']:.4f}"
      f" (gap {100 * (test['oracle_call_savings'] - test['call_savings']):.1f} pp)")
PY
