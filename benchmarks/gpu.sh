#!/usr/bin/env bash
# The GPU benchmark in one call (~8 minutes on one H200): JAX vs PyTorch eager vs torch.compile.
#
#   train step, 256 px, batch 4 and 32, float32 and bfloat16   (12 configurations)
#   stylize, 1024x1024, bfloat16, batch 16                     (3 configurations)
#
# Usage:  benchmarks/gpu.sh [OUTDIR]          (default: $OUT, else ./bench_gpu)
# Writes OUTDIR/gpu.json, OUTDIR/gpu.png, OUTDIR/gpu.txt (the table) and the partial JSONs.
#
# Python packages the device image lacks (ml-collections, grain, array-record, portpicker:
# imported by fnst_jax.train_lib) are installed from ./.whl when present. Fetch them once,
# here, on a machine with PyPI (./.whl is git-ignored; carry it to the device):
#   benchmarks/gpu.sh --fetch-wheels
# Through the device tool:  run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600)
#
# Each configuration runs in its own process, JAX first, then torch eager, then torch.compile
# (the slowest to compile); every JSON is written after each configuration, so a run cut
# short keeps what it measured. Cold compiles: no persistent JAX cache, fresh inductor cache.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  python3 -m pip download --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl \
    grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0 portpicker==1.6.0
  exit $?
fi

OUTDIR="${1:-${OUT:-bench_gpu}}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python3}"
STEPS="${STEPS:-10}"
WARMUP="${WARMUP:-3}"

if ! "$PY" -c "import ml_collections, grain, flax, optax, orbax.checkpoint" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install --quiet --no-index --no-deps .whl/*.whl || exit 1
  fi
fi
"$PY" - <<'PYEOF' || exit 1
import importlib.util, sys
missing = [m for m in ("jax", "flax", "optax", "orbax.checkpoint", "ml_collections", "grain",
                       "torch", "matplotlib") if importlib.util.find_spec(m.split(".")[0]) is None]
if missing:
    sys.exit(f"gpu.sh: missing Python packages {missing}: see --fetch-wheels in benchmarks/gpu.sh")
import jax, torch
print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA", flush=True)
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
