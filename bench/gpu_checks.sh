#!/usr/bin/env bash
# The GPU checks and benchmarks of issue 11 in one run on a CUDA machine; results go to OUT (default gpu-results/).
#
#   bench/gpu_checks.sh [OUT] [--install WHEELS_DIR]
#
# With --install, the project (this checkout and its plugins) and the wheels in WHEELS_DIR are installed into
# /tmp/biozoo-site without any index (for a machine without network access), and WHEELS_DIR/refs (if present,
# holding the reference packages `scgpt` and `chroma`) is put on PYTHONPATH. Otherwise everything must already be
# importable: biozoo with its plugins, scgpt 0.2.4 and generate-chroma 1.0.0 (both installed --no-deps).
#
# Each step has its own time limit and its own output file; a failing step does not stop the others:
#   env.txt          GPU, driver, torch
#   tests.log        the CUDA tests (attention conformance on CUDA, chroma on CUDA, precision on CUDA)
#   gpu_embed.md     scGPT whole-human embedding vs the reference (bench/gpu_embed.py), .json beside it
#   syncs.md         host synchronisations in the hot paths (bench/cuda_syncs.py)
#   generate.md      autoregressive generation, GPU and CPU (bench/autoregressive.py --generate)
#   chroma.md        Chroma per SDE step vs the reference on the GPU, and biozoo in bfloat16 there
#   log.txt          everything the steps wrote to stderr
set -u -o pipefail
OUT=${1:-gpu-results}
shift || true
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
PY=${PYTHON:-python3}
LOG="$OUT/log.txt"

if [ "${1:-}" = "--install" ]; then
    WHEELS=$2
    start=$(date +%s)
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
        --target /tmp/biozoo-site "$WHEELS"/*.whl . plugins/scgpt plugins/autoregressive plugins/attention \
        plugins/chroma >>"$LOG" 2>&1 || { echo "install failed" >>"$LOG"; exit 1; }
    export PYTHONPATH="/tmp/biozoo-site:$(realpath "$WHEELS")/refs${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="/tmp/biozoo-site/bin:$PATH"
    echo "installed in $(( $(date +%s) - start )) s" >>"$LOG"
fi

step() {  # step NAME SECONDS OUTFILE COMMAND...
    local name=$1 limit=$2 outfile=$3
    shift 3
    local start=$(date +%s)
    echo "== $name (limit ${limit}s)" >>"$LOG"
    timeout "$limit" "$@" >>"$outfile" 2>>"$LOG"
    echo "== $name: exit $? after $(( $(date +%s) - start )) s" | tee -a "$LOG" >>"$outfile"
}

# DEVICE=cpu QUICK=1 rehearses the script on a machine without a GPU (small sizes, CUDA-only steps skipped).
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:+--quick}
export BIOZOO_CUDA_TESTS_DEVICE=$DEVICE

{ nvidia-smi; "$PY" -c "import torch, biozoo; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"; } \
    >"$OUT/env.txt" 2>&1

step tests 100 "$OUT/tests.log" "$PY" -m pytest -q -p no:cacheprovider -rs \
    plugins/attention/tests/test_attention_cuda.py plugins/chroma/tests/test_chroma_cuda.py \
    $(ls tests/test_*cuda*.py plugins/*/tests/test_*cuda*.py 2>/dev/null | grep -v -e attention_cuda -e chroma_cuda)
step gpu_embed 200 "$OUT/gpu_embed.md" "$PY" bench/gpu_embed.py --device "$DEVICE" --rounds 2 $QUICK \
    --out "$OUT/gpu_embed.json"
if [ "$DEVICE" != cpu ]; then
    step syncs 45 "$OUT/syncs.md" "$PY" bench/cuda_syncs.py
fi
if "$PY" bench/autoregressive.py --help 2>/dev/null | grep -q -- "--generate"; then
    step generate 60 "$OUT/generate.md" "$PY" bench/autoregressive.py --generate --device "$DEVICE"
fi
step chroma 90 "$OUT/chroma.md" "$PY" bench/chroma.py --device "$DEVICE" --rounds 3 --sample-steps 100 $QUICK
step chroma_bf16 30 "$OUT/chroma.md" "$PY" bench/chroma.py --device "$DEVICE" --no-reference --dtype bfloat16 \
    --rounds 3 --sample-steps 0 $QUICK
