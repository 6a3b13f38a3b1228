#!/usr/bin/env bash
# The Sharpest-Directions gpu tier (SD-1 ... SD-7, registry SD-1 cases.gpu) on a bare CUDA machine, from
# the repository root, without installing the project, in stages that each have their own time slot,
# in priority order, so that a slow stage still leaves the reports of the earlier ones:
#   a. mnist1d-large-cnn1d: SD-1 (its point and control twin), SD-3 and SD-4 (which read that run);
#   b. mnist1d-large-cnn1d: SD-5 and SD-6 (three Nudged-SGD arms, trained together in 2 processes);
#   c. mnist1d-large-cnn1d: SD-7 (momentum 0 vs 0.9 at lr 0.1);
#   d. cifar10-simplecnn: SD-1, SD-3, SD-4 — skipped with DatasetNotFound's line without CIFAR-10 under DATA;
#   e. cifar10-resnet32-nobn: SD-1 — likewise;
#   f. mnist1d-large-cnn1d: SD-2 (six grid points; the lr 0.001 point is 400,000 steps: the long pole).
# The default slots add up to 600 s (the 10-minute budget); they are estimates from FLOP counts
# (registry SD-1 justification "cases"), not measurements: no GPU was lent when they were written. A
# stage cut by its slot keeps what it finished in the cache: rerunning the script resumes there.
#
#   OUT=/some/dir DATA=/path/with/cifar-10-batches-py bash benchmarks/gpu_sd.sh
#
# Needs torch with CUDA and the declared dependencies importable (PYTHONPATH may point at wheels unpacked
# elsewhere). Writes gpu.txt, pytest_<stage>.log, claims_<stage>.{json,md} and times.txt to $OUT.
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the logs}
CACHE=${CACHE:-/tmp/claims-cache}
DATA=${DATA:-${CLAIMS_DATA_DIR:-$HOME/data}}
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" CLAIMS_PREBUILD=0
LARGE=mnist1d-large-cnn1d

python3 - <<'EOF' | tee "$OUT/gpu.txt"
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
EOF

stage() {  # stage TAG SECONDS -k-EXPRESSION
    local t0=$(date +%s)
    timeout "$2" python3 -m pytest claims/test_sd_networks.py claims/test_sd_nudged.py claims/test_sd_steps.py \
        -m gpu -k "$3" -p no:cacheprovider --cache-dir "$CACHE" --data-dir "$DATA" \
        --reports-dir "/tmp/report_sd_$1" --durations=20 -q -rs 2>&1 | tee "$OUT/pytest_$1.log"
    local rc=${PIPESTATUS[0]}
    echo "stage $1 ($3): rc $rc, wall $(( $(date +%s) - t0 )) s of ${2} s" | tee -a "$OUT/times.txt"
    cp "/tmp/report_sd_$1/claims.json" "$OUT/claims_$1.json" 2>/dev/null
    cp "/tmp/report_sd_$1/claims.md" "$OUT/claims_$1.md" 2>/dev/null
}

stage a "${A_S:-150}" "$LARGE and (sd1 or sd3 or sd4)"
stage b "${B_S:-120}" "$LARGE and (sd5 or sd6)"
stage c "${C_S:-60}" "$LARGE and sd7"
stage d "${D_S:-100}" "cifar10-simplecnn"
stage e "${E_S:-70}" "cifar10-resnet32-nobn"
stage f "${F_S:-100}" "$LARGE and sd2"
python3 -m fixtures list --cache-dir "$CACHE" > "$OUT/cache.txt" 2>&1
