#!/bin/bash
# Generation-0 pilots of benchmarks/RESULTS.md section 6: ClusVPR for 3 epochs x 400 queries on Nordland, no
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
python benchmarks/train.py --model clusvpr --model-arg whitening_dim=null --generations 1 --epochs 3 \
  --train-set nordland_train --val-set nordland_val \
  --backbone-weights ../shared/weights/vgg16_hed_conv.safetensors --input-size 96 192 \
  --cache-features runs/cache --optimizer adam --lr 3e-5 --weight-decay 0 --batch-size 4 \
  --neg-num 1 --neg-pool 1000 --pos-num 1 --pos-pool 20 --cache-size 1000 --queries-per-epoch 400 \
  --loss sare_ind --temperatures 0.06 0.06 0.05 0.04 --select-by R@5 --threads 1 --no-progress \
  --seed "$seed" --init-seed "$init" --cluster-seed "$clusters" "$@" --output "runs/gen0_$tag" > "runs/gen0_$tag.log" 2>&1
