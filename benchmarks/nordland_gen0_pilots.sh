#!/bin/bash
# Generation-0 pilots of benchmarks/results/seed-spread.md: ClusVPR for 3 epochs x 400 queries on Nordland, no
# whitening, validation only (about 5 minutes each with two sharing 2 cores), to compare what the random streams and
# the start / learning rates do before spending a full run.
# usage: bash benchmarks/nordland_gen0_pilots.sh TAG SEED INIT_SEED CLUSTER_SEED [more train.py options]
#   e.g. bash benchmarks/nordland_gen0_pilots.sh id_c5low_o0 0 0 0 --model-arg cwt_init=identity --lr 1e-5 --aggregator-lr-mult 3
set -e
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
  echo "usage: bash benchmarks/nordland_gen0_pilots.sh TAG SEED INIT_SEED CLUSTER_SEED [train.py options]" >&2; exit 2
fi
tag=$1; seed=$2; init=$3; clusters=$4; shift 4
mkdir -p runs
source benchmarks/nordland_recipe.sh
python benchmarks/train.py --model clusvpr --model-arg whitening_dim=null --generations 1 --epochs 3 "${nordland_recipe[@]}" \
  --seed "$seed" --init-seed "$init" --cluster-seed "$clusters" "$@" --output "runs/gen0_$tag" > "runs/gen0_$tag.log" 2>&1
