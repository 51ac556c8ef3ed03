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
#   gpu_embed.md     scGPT whole-human embedding vs the reference (bench/gpu_embed.py), then eager vs torch.compile
#   syncs.md         host synchronisations in the hot paths (bench/cuda_syncs.py)
#   generate.md      `zoo generate autoregressive/pbmc-small -n 1000` on the GPU, and 256 cells on its CPUs
#   chroma.md        Chroma per SDE step vs the reference on the GPU, and biozoo in bfloat16 there
#   cli.log          the README's commands on the GPU in bfloat16, on real cells (examples/pbmc68k_test.h5ad), timed
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

STEPS=${STEPS:-all}  # e.g. STEPS="tests gpu_embed generate": only those steps

step() {  # step NAME SECONDS OUTFILE COMMAND... (a shell function as COMMAND runs in a subshell)
    local name=$1 limit=$2 outfile=$3
    shift 3
    if [ "$STEPS" != all ] && [[ " $STEPS " != *" $name "* ]]; then
        return 0
    fi
    local start=$(date +%s)
    echo "== $name (limit ${limit}s)" >>"$LOG"
    if declare -F "$1" >/dev/null; then
        export -f "$1"
        export DEVICE
        timeout "$limit" bash -c "$1" >>"$outfile" 2>&1
    else
        timeout "$limit" "$@" >>"$outfile" 2>>"$LOG"
    fi
    echo "== $name: exit $? after $(( $(date +%s) - start )) s" | tee -a "$LOG" >>"$outfile"
}

# DEVICE=cpu QUICK=1 rehearses the script on a machine without a GPU (small sizes, CUDA-only steps skipped).
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:+--quick}
export BIOZOO_CUDA_TESTS_DEVICE=$DEVICE

{ nvidia-smi; "$PY" -c "import torch, biozoo; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"; } \
    >"$OUT/env.txt" 2>&1

step tests 80 "$OUT/tests.log" "$PY" -m pytest -q -p no:cacheprovider -rs \
    plugins/attention/tests/test_attention_cuda.py plugins/chroma/tests/test_chroma_cuda.py \
    $(ls tests/test_*cuda*.py plugins/*/tests/test_*cuda*.py 2>/dev/null | grep -v -e attention_cuda -e chroma_cuda)
step tests_k_cuda 80 "$OUT/tests.log" "$PY" -m pytest -q -p no:cacheprovider -rs -k "cuda and not compiled" \
    plugins/autoregressive/tests/test_autoregressive_decoding.py tests/test_precision.py tests/test_singlecell_device.py
step gpu_embed 180 "$OUT/gpu_embed.md" "$PY" bench/gpu_embed.py --device "$DEVICE" --rounds 2 $QUICK
step generate 40 "$OUT/generate.md" "$PY" bench/autoregressive.py --cells 1000 --device "$DEVICE"
step generate_bs256 25 "$OUT/generate.md" "$PY" bench/autoregressive.py --cells 1000 --device "$DEVICE" --batch-size 256
step generate_cpu 30 "$OUT/generate.md" "$PY" bench/autoregressive.py --cells 256 --device cpu
cli() {  # the README's commands on the device in bfloat16, each timed; stops at the first failure
    local w; w=$(mktemp -d)
    local cells=examples/pbmc68k_test.h5ad
    set -x
    time zoo embed scgpt/cls $cells -o $w/e.h5ad --device "$DEVICE" --dtype bfloat16 &&
    time zoo annotate scgpt/cls $cells -o $w/a.h5ad --device "$DEVICE" --dtype bfloat16 &&
    time zoo finetune scgpt/cls $cells --label-column bulk_labels --epochs 1 -o $w/ft --device "$DEVICE" \
        --dtype bfloat16 &&
    time zoo generate autoregressive/pbmc-small -n 1000 -o $w/g.h5ad --device "$DEVICE" --dtype bfloat16 &&
    time zoo generate autoregressive/pbmc-small -n 1000 -o $w/g32.h5ad --device "$DEVICE" &&
    time zoo sample chroma/demo --length 100 -n 4 --steps 100 -o $w/s --device "$DEVICE"
}
step cli 90 "$OUT/cli.log" cli
if [ "$DEVICE" != cpu ]; then
    step syncs 40 "$OUT/syncs.md" "$PY" bench/cuda_syncs.py
fi
step chroma 70 "$OUT/chroma.md" "$PY" bench/chroma.py --device "$DEVICE" --rounds 3 --sample-steps 100 $QUICK
step compile 100 "$OUT/gpu_embed.md" "$PY" bench/gpu_embed.py --device "$DEVICE" --rounds 2 --compile-only $QUICK
step chroma_bf16 25 "$OUT/chroma.md" "$PY" bench/chroma.py --device "$DEVICE" --no-reference --dtype bfloat16 \
    --rounds 3 --sample-steps 0 $QUICK
