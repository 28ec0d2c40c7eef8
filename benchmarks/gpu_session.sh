#!/usr/bin/env bash
# One prepared GPU check for a session with a device machine (about 5 minutes on an H100/H200):
# correctness on CUDA (bf16 vs fp32, torch KNN on CUDA vs CPU), the aggregator vs the reference form at
# batch 32, the full model at 480x640 batch 32 (reference form, fp32, bf16 channels_last, compile,
# VGG16 alone), and the inference paths of the three releases side by side (bench_inference.py --part gpu:
# fp32, bf16 autocast and fp16 weights channels_last, compiled bf16, onnxruntime's CUDA provider when
# installed; images/s and cosine to fp32 in one table, gpu.md). Writes logs, JSON and the Markdown tables
# rendered from it (aggregator.md, model.md, gpu.md) under ${OUT:-gpu_out}, for benchmarks/results/gpu.md.
# `GPU_SESSION_DEVICE=cpu bash benchmarks/gpu_session.sh` runs the inference-paths part alone on the CPU at a
# small size (a check of the script, no GPU numbers).
set -uo pipefail
out="${OUT:-gpu_out}"; mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "${GPU_SESSION_DEVICE:-cuda}" = cpu ]; then
  python benchmarks/bench_inference.py --part gpu --device cpu --models gem_vgg16.nordland --sizes 64x96 --batch 2 \
    --seconds 0.2 --out "$out" 2>&1 | tee "$out/inference_paths.txt"
  exit "${PIPESTATUS[0]}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python - <<'PY' 2>&1 | tee "$out/correctness.txt"
import torch, registry, clusvpr_plugin
from clusvpr_plugin.knn import knn_sq_dist_sum
torch.manual_seed(0)
t = torch.randn(32, 301, 256)
print("knn cuda vs cpu max rel err:", float(((knn_sq_dist_sum(t.cuda(), 10).cpu() - knn_sq_dist_sum(t, 10)).abs()
      / knn_sq_dist_sum(t, 10)).max()))
m = registry.create("clusvpr_vgg16").cuda()
x = torch.randn(4, 3, 480, 640, device="cuda")
with torch.no_grad():
    ref = m(x)
print("bf16 channels_last vs fp32 min cosine:", float(torch.nn.functional.cosine_similarity(m.encode(x), ref).min()))
PY
python benchmarks/bench_aggregator.py --device cuda --batch 32 --repeats 20 --out "$out/aggregator.json" 2>&1 | tee "$out/aggregator.txt"
python benchmarks/bench_model.py --device cuda --batch 32 --iters 20 --compile --out "$out/model.json" 2>&1 | tee "$out/model.txt"
python benchmarks/bench_inference.py --part gpu --device cuda --sizes 96x192,480x640 --batch 16 --seconds 3 \
  --out "$out" 2>&1 | tee "$out/inference_paths.txt"
