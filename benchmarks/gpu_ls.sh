#!/usr/bin/env bash
# The Large-Scale-Structure gpu tier (LS-5 ... LS-10, registry LS-5 cases) on a bare CUDA machine, from
# the repository root, without installing the project, in stages in priority order, each with its own
# time slot (default slots sum to 600 s, the 10-minute budget the registry's gpu numbers were sized for):
#   1. mnist1d-large, LS-5 ... LS-8 (offline: the pool of 110 optima, tunnels, connectors, spectra)  280 s
#      then LS-9 and LS-10 on the same pool (the nine recipes' ensembles, the widths, the cyclic arms)
#   2. cifar10-simplecnn, LS-5 and LS-6 (Fort's SimpleCNN on 2,000 CIFAR-10 rows), if the data are there 200 s
#   3. fashion-mnist-simplecnn, LS-8 (the same CNN on Fashion-MNIST, Fort's Fig. 4), if the data are there 120 s
# pytest builds whatever is missing (fixtures/ls.py) and writes one report per stage. A slot that runs
# out interrupts its session (SIGINT), which still writes the records it has (ended: interrupted), so
# a slow stage leaves the earlier reports; the next stage starts on time.
#
#   OUT=/some/dir [CLAIMS_DATA_DIR=/datasets] bash benchmarks/gpu_ls.sh
#   MNIST_S=280 CIFAR_S=200 FASHION_S=120   per-stage slots (seconds); 0 skips a stage
#
# Needs torch with CUDA and the declared dependencies importable (PYTHONPATH may point at wheels
# unpacked elsewhere). CIFAR-10 and Fashion-MNIST are read from $CLAIMS_DATA_DIR (default ~/data, the
# torchvision layout: cifar-10-batches-py/, FashionMNIST/raw/); nothing is downloaded. Writes gpu.txt,
# pytest_<stage>.log and claims_<stage>.{json,md} to $OUT.
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the logs}
CACHE=${CACHE:-/tmp/claims-cache}
export CLAIMS_DATA_DIR=${CLAIMS_DATA_DIR:-$HOME/data}
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
mkdir -p "$OUT"
t_start=$(date +%s)

python3 - <<'EOF' | tee "$OUT/gpu.txt"
import os, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-", "data", os.environ["CLAIMS_DATA_DIR"])
EOF

have() {  # have DATASET: its files are under $CLAIMS_DATA_DIR (a 10-row load; DatasetNotFound's line otherwise)
    python3 -c "
import sys
from core.data import DatasetNotFound, load_dataset
try:
    load_dataset('$1', n_train=10, n_test=10)
except DatasetNotFound as e:
    print(e)
    sys.exit(1)
" 2>&1 | tee -a "$OUT/gpu.txt"
    return "${PIPESTATUS[0]}"
}

claims() {  # claims TAG SECONDS -k-EXPRESSION
    [ "$2" -gt 0 ] || { echo "stage $1: skipped (slot 0)" | tee -a "$OUT/gpu.txt"; return; }
    local t0=$(date +%s)
    timeout -s INT -k 30 "$2" python3 -m pytest claims/test_ls_networks.py -m gpu -k "$3" -p no:cacheprovider \
        --cache-dir "$CACHE" --reports-dir "/tmp/report_ls_$1" --durations=25 -q 2>&1 | tee "$OUT/pytest_$1.log"
    echo "stage $1: rc ${PIPESTATUS[0]}, wall $(( $(date +%s) - t0 )) s (slot $2 s)" | tee -a "$OUT/pytest_$1.log" "$OUT/gpu.txt"
    cp "/tmp/report_ls_$1/claims.json" "$OUT/claims_$1.json" 2>/dev/null
    cp "/tmp/report_ls_$1/claims.md" "$OUT/claims_$1.md" 2>/dev/null
}

# one session per case: its LS-5 ... LS-8 tests come first in the file, so the pool and its tunnels are
# built (and recorded) before LS-9's recipes and LS-10's arms
claims mnist1d "${MNIST_S:-280}" "mnist1d-large"
if have cifar10; then claims cifar10 "${CIFAR_S:-200}" "cifar10-simplecnn"; fi
if have fashion_mnist; then claims fashion "${FASHION_S:-120}" "fashion-mnist-simplecnn"; fi
echo "total wall $(( $(date +%s) - t_start )) s" | tee -a "$OUT/gpu.txt"
