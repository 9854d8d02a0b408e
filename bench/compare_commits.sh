#!/usr/bin/env bash
# Server CPU per bid request of two commits, side by side on one machine in one run:
#   bench/compare_commits.sh OLD_COMMIT [NEW_COMMIT (default: the working tree)]
# Run it from a quiet machine: it measures CPU time, and other work on the cores moves it.
# Each commit is checked out in a worktree under /tmp, its C extensions built, and
# `python -m bench --systems bidfilter` run for it, alternating old and new, in the two client
# shapes that matter: pipelined (8 connections x 8 in flight) and 16 connections with one call
# each (how most Java/Go Thrift clients call). Each run trains its own workload model with its
# own code (cached per worktree). NEW_ARGS (e.g. NEW_ARGS="--workload per-partner") go to the
# new commit's runs only: what its defaults train, against what the old commit's did. Prints the
# bidfilter row of each run; full results under /tmp/bidfilter-compare/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$PWD/.venv/bin/python"
OUT=/tmp/bidfilter-compare
OLD=$1
NEW=${2:-}
mkdir -p "$OUT"
tree_of() {
  local commit=$1 dir="$OUT/tree-$1"
  if [ ! -d "$dir" ]; then
    git worktree add --detach -q "$dir" "$commit"
    # Its C extensions, built as an install builds them (a wheel), then put beside the sources.
    "$PY" -m pip wheel -q --no-deps -w "$dir.wheel" "$dir" >/dev/null 2>&1
    "$PY" - "$dir" <<'PY'
import glob, os, sys, zipfile
tree = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{tree}.wheel/*.whl")[0]) as wheel:
    for name in wheel.namelist():
        if name.endswith(".so"):
            with open(os.path.join(tree, "src", name), "wb") as out:
                out.write(wheel.read(name))
PY
  fi
  echo "$dir"
}
OLD_TREE=$(tree_of "$OLD")
NEW_TREE=$([ -n "$NEW" ] && tree_of "$NEW" || pwd)
run() {  # NAME TREE ARGS...
  local name=$1 tree=$2
  shift 2
  cp docs/benchmarks.md "$OUT/$name.md"
  (cd "$tree" && PYTHONPATH="$tree/src" "$PY" -m bench --systems bidfilter --duration 8 \
    --rates 10000 --out "$OUT/$name" --docs "$OUT/$name.md" "$@" >"$OUT/$name.log" 2>&1)
  echo "$name: $(grep -h '^| bidfilter |' "$OUT/$name.md" | head -1)"
}
uptime
for round in 1 2; do
  run "new-pipelined-$round" "$NEW_TREE" ${NEW_ARGS:-}
  run "old-pipelined-$round" "$OLD_TREE"
done
run new-single "$NEW_TREE" --connections 16 --depth 1 ${NEW_ARGS:-}
run old-single "$OLD_TREE" --connections 16 --depth 1
uptime
