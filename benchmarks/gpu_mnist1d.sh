#!/usr/bin/env bash
# The gpu tier's offline case (MNIST-1D, wide 1-D CNN with BN) on a bare CUDA machine, from the
# repository root, without installing the project, in stages that each fit a time slot:
#   1. pre-build the 10 SWA runs and 10 SGD-from-SWA runs with JOBS parallel builder processes
#      (a small net leaves a big GPU idle, so N processes train N seeds at once);
#   2. the cheap AV claims (segments, metrics, flat side, rays) -> report A;
#   3. the Definition-1 survey claims (AV-1, AV-1b, AV-12, AV-3) -> report B;
#   4. the no-BN twin and AV-2, if time is left.
# Each stage has its own timeout, so a slow stage still leaves the earlier reports.
#
#   OUT=/some/dir JOBS=10 bash benchmarks/gpu_mnist1d.sh
#
# Needs torch with CUDA and the declared dependencies importable (PYTHONPATH may point at wheels
# unpacked elsewhere). Writes gpu.txt, build.log, pytest_{a,b,c}.log, claims_{a,b}.{json,md} to $OUT.
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the logs}
JOBS=${JOBS:-10}
CACHE=${CACHE:-/tmp/claims-cache}
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
BN=mnist1d-large-cnn1d-bn NOBN=mnist1d-large-cnn1d-nobn

python3 - <<'EOF' | tee "$OUT/gpu.txt"
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
EOF

build() {  # build CASE SECONDS
    local t0=$(date +%s)
    timeout "$2" python3 -m fixtures build -m gpu --case "$1" --jobs "$JOBS" --cache-dir "$CACHE" \
        2>&1 | tee -a "$OUT/build.log"
    local rc=$?
    echo "build $1: rc $rc, wall $(( $(date +%s) - t0 )) s" | tee -a "$OUT/build.log"
    return $rc
}

claims() {  # claims TAG SECONDS -k-EXPRESSION
    local t0=$(date +%s)
    timeout "$2" python3 -m pytest claims/test_av_networks.py -m gpu -k "$3" -p no:cacheprovider \
        --cache-dir "$CACHE" --reports-dir "/tmp/report_$1" --durations=25 -q 2>&1 | tee "$OUT/pytest_$1.log"
    echo "claims $1: wall $(( $(date +%s) - t0 )) s" | tee -a "$OUT/pytest_$1.log"
    cp "/tmp/report_$1/claims.json" "$OUT/claims_$1.json" 2>/dev/null
    cp "/tmp/report_$1/claims.md" "$OUT/claims_$1.md" 2>/dev/null
}

build "$BN" "${BUILD_S:-300}" || exit 1
python3 -m fixtures list --cache-dir "$CACHE" >> "$OUT/build.log" 2>&1
claims a "${CLAIMS_A_S:-70}" "$BN and (av8 or av9 or av10 or av11)"
claims b "${CLAIMS_B_S:-170}" "$BN and (av1_ or av1b or av12 or av3)"
if [ -n "${NOBN_S:-}" ] && build "$NOBN" "$NOBN_S"; then
    claims c "${CLAIMS_C_S:-60}" "av2"
fi
