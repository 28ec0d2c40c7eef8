# The Nordland training options shared by benchmarks/nordland_runs.sh and benchmarks/nordland_gen0_pilots.sh
# (benchmarks/results/nordland-twice-budget.md and seed-spread.md), sourced by both from the repository root:
# data, backbone weights, 96x192 input, cached conv1..conv4, Adam 3e-5, batches of 4 tuples, mining, SARE-ind,
# selection by R@5.
nordland_recipe=(--train-set nordland_train --val-set nordland_val --data-root ../shared/data
                 --backbone-weights ../shared/weights/vgg16_hed_conv.safetensors --input-size 96 192
                 --cache-features runs/cache --optimizer adam --lr 3e-5 --weight-decay 0 --batch-size 4
                 --neg-num 1 --neg-pool 1000 --pos-num 1 --pos-pool 20 --cache-size 1000 --queries-per-epoch 400
                 --loss sare_ind --temperatures 0.06 0.06 0.05 0.04 --select-by R@5 --threads 1 --no-progress)
