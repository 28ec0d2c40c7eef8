#!/bin/bash
# Retrain the released models from scratch with the recorded commands (benchmarks/results/releases.md).
#   bash benchmarks/release.sh train NAME     one training run (names below), writes runs/release_NAME (+ .log)
#   bash benchmarks/release.sh all            the three release runs, two at a time (about 2.5 hours on a 2-core CPU),
#                                             then the bundle step
#   bash benchmarks/release.sh bundle         pick each model's run on validation and write the release folders
# Needs ../shared (Nordland, the VGG16 conv weights). seed-spread.md's options (nordland_recipe.sh: 96x192, cached
# conv1..conv4, Adam, SARE-ind, 1 hard negative, selection by validation R@5) with twice its budget: 9600 tuples
# (24 epochs x 400 queries) for every model.
set -e
cd "$(dirname "$0")/.."
source benchmarks/nordland_recipe.sh
common=("${nordland_recipe[@]}" --test-set nordland_test --test-set corridor)
white=(--model-arg whitening_dim=1024 --whitening-dims 1024 512 256 none)
# ClusVPR: identity-started CWT, conv5 at 1e-5 and the aggregator at 3e-5 (seed-spread.md), 4 generations x 6 epochs
clusvpr=(--model clusvpr "${white[@]}" --generations 4 --gen0-epochs 6 --epochs 6
         --model-arg cwt_init=identity --lr 1e-5 --aggregator-lr-mult 3)
# NetVLAD: one rate 3e-5 for conv5 and the aggregator (its best in nordland-one-budget.md,
# nordland-twice-budget.md and seed-spread.md), 24 epochs
netvlad=(--model netvlad "${white[@]}" --epochs 24)
# GeM: split rates (its best in seed-spread.md) and a PCA whitening chosen on validation, 24 epochs
gem=(--model gem --model-arg whitening_dim=512 --whitening-dims 512 256 none --epochs 24 --lr 1e-5
     --aggregator-lr-mult 3)

run() {  # run NAME SEED OPTIONS...
  local name=$1 seed=$2; shift 2
  local out=runs/release_${name}_seed$seed
  mkdir -p runs
  git rev-parse HEAD > "$out.commit" 2>/dev/null || true  # the code commit the card records
  python benchmarks/train.py "${common[@]}" "$@" --seed "$seed" --output "$out" > "$out.log" 2>&1
}

case $1 in
  train)
    case $2 in
      clusvpr_seed0) run clusvpr 0 "${clusvpr[@]}" ;;
      clusvpr_seed1) run clusvpr 1 "${clusvpr[@]}" ;;
      netvlad_seed0) run netvlad 0 "${netvlad[@]}" ;;
      gem_seed0) run gem 0 "${gem[@]}" ;;
      *) echo "usage: bash benchmarks/release.sh train clusvpr_seed0|clusvpr_seed1|netvlad_seed0|gem_seed0" >&2
         exit 2 ;;
    esac ;;
  all)
    bash "$0" train clusvpr_seed0 & (bash "$0" train netvlad_seed0; bash "$0" train gem_seed0); wait
    bash "$0" bundle ;;
  bundle)  # every finished release run takes part; runs of one model compete on validation
    runs=(); for r in runs/release_*_seed*/train/summary.json; do runs+=("${r%/train/summary.json}"); done
    vpr release build --tag nordland --runs "${runs[@]}" --data-root ../shared/data \
      --reference-dir tests/release_reference ;;
  *) echo "usage: bash benchmarks/release.sh train NAME | all | bundle" >&2; exit 2 ;;
esac
