#!/bin/bash
# Nordland runs of benchmarks/results/nordland-twice-budget.md: twice the budget of nordland-one-budget.md
# (4800 tuples = 12 epochs x 400 queries), whitening size chosen on validation.
# usage: bash benchmarks/nordland_runs.sh NAME SEED (names below)
# clusvpr_id: ClusVPR with identity-started CWT blocks, conv5 at lr 1e-5 and the aggregator at 3e-5 (seed-spread.md);
# netvlad_split, gem_split: the baselines with the same split rates (conv5 1e-5, aggregator 3e-5)
set -e
cd "$(dirname "$0")/.."
name=$1; seed=${2:-0}
source benchmarks/nordland_recipe.sh
common=("${nordland_recipe[@]}" --test-set nordland_test --test-set corridor --seed "$seed")
white=(--model-arg whitening_dim=1024 --whitening-dims 1024 512 256 none)
case $name in
  clusvpr) extra=(--model clusvpr "${white[@]}" --generations 4 --gen0-epochs 3 --epochs 3) ;;
  netvlad) extra=(--model netvlad "${white[@]}" --epochs 12) ;;
  gem)     extra=(--model gem --epochs 12) ;;
  clusvpr_id) extra=(--model clusvpr "${white[@]}" --generations 4 --gen0-epochs 3 --epochs 3
                     --model-arg cwt_init=identity --lr 1e-5 --aggregator-lr-mult 3) ;;
  netvlad_split) extra=(--model netvlad "${white[@]}" --epochs 12 --lr 1e-5 --aggregator-lr-mult 3) ;;
  gem_split) extra=(--model gem --epochs 12 --lr 1e-5 --aggregator-lr-mult 3) ;;
  *) echo "usage: bash benchmarks/nordland_runs.sh clusvpr|netvlad|gem|clusvpr_id|netvlad_split|gem_split [SEED]" >&2
     exit 2 ;;
esac
out=runs/long_${name}_seed$seed
mkdir -p runs
python benchmarks/train.py "${common[@]}" "${extra[@]}" --output "$out" > "$out.log" 2>&1
