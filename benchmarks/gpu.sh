#!/usr/bin/env bash
# The GPU benchmark: JAX vs PyTorch eager vs torch.compile on one NVIDIA GPU (BENCHMARKS.md).
#
#   stylize, 1024x1024, bfloat16, batch 16                     (3 configurations)
#   train step, 256 px, batch 4 and 32, float32 and bfloat16   (12 configurations)
#
# Install, from the repository root, on a Linux machine with an NVIDIA GPU and its driver:
#   python3 -m venv .venv && . .venv/bin/activate
#   pip install -e ".[torch]"       # fnst_jax and PyTorch (PyPI's Linux wheels include CUDA)
#   pip install -U "jax[cuda13]"    # JAX's CUDA build ("jax[cuda12]" for a CUDA 12 driver)
# Run:
#   benchmarks/gpu.sh [OUTDIR]      # default OUTDIR: ./bench_gpu
# Environment: STEPS (timed steps, default 10), WARMUP (untimed calls, default 3), PYTHON
# (default python3).
#
# Writes OUTDIR/gpu.txt (the table), OUTDIR/gpu.json (every record), OUTDIR/gpu.png (images/s
# per configuration) and the JSON of each part (gpu_stylize.json, gpu_train_eager.json,
# gpu_train_compile.json).
#
# Each configuration runs in its own process, JAX first, then torch eager, then torch.compile
# (the slowest to compile); every JSON is written after each configuration, so a run cut
# short keeps what it measured. Compiles are cold: no persistent JAX cache, fresh inductor cache.
set -uo pipefail
cd "$(dirname "$0")/.."

OUTDIR="${1:-bench_gpu}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python3}"
STEPS="${STEPS:-10}"
WARMUP="${WARMUP:-3}"

"$PY" - <<'PYEOF' || exit 1
import importlib.util, sys
missing = [m for m in ("jax", "flax", "optax", "absl", "torch", "matplotlib", "fnst_jax")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu.sh: missing Python packages {missing}: see the install lines at its top")
import jax, torch
if jax.default_backend() != "gpu" or not torch.cuda.is_available():
    sys.exit(f"gpu.sh: JAX's backend is {jax.default_backend()!r} and torch sees "
             f"{torch.cuda.device_count()} CUDA devices: install the CUDA builds (see its top)")
print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__,
      torch.cuda.get_device_name(0), flush=True)
PYEOF
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true

common=(--device gpu --steps "$STEPS" --warmup "$WARMUP" --no-chart)
bench() { "$PY" -m fnst_jax.bench "$@" "${common[@]}"; }
start=$SECONDS

# Stylize first (cheap), then the train step: JAX and torch eager, then torch.compile.
bench --frameworks jax,torch,torch-compile --task stylize --batch-size 16 --image-size 1024 \
  --dtype bfloat16 --worker-timeout 150 --json "$OUTDIR/gpu_stylize.json"
bench --frameworks jax,torch --task train-step --batch-size 4,32 --image-size 256 \
  --dtype float32,bfloat16 --worker-timeout 120 --json "$OUTDIR/gpu_train_eager.json"
bench --frameworks torch-compile --task train-step --batch-size 32,4 --image-size 256 \
  --dtype bfloat16,float32 --worker-timeout 150 --json "$OUTDIR/gpu_train_compile.json"

parts=()
for f in "$OUTDIR"/gpu_stylize.json "$OUTDIR"/gpu_train_eager.json "$OUTDIR"/gpu_train_compile.json; do
  [[ -f "$f" ]] && parts+=("$f")
done
"$PY" -m fnst_jax.bench --merge "${parts[@]}" --json "$OUTDIR/gpu.json" --chart "$OUTDIR/gpu.png" \
  | tee "$OUTDIR/gpu.txt"
echo "gpu.sh: $((SECONDS - start)) s"
