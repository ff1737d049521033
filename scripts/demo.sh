#!/usr/bin/env bash
# The default job, end to end, on the built-in data (scikit-learn digits; nothing is downloaded).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"   # also cd's to the repository root

OUT=runs/demo
mkdir -p "$OUT"

# 1. Train the default preset and save one checkpoint (prints test accuracy, parameter count, time).
spk-train --preset digits-2-64 --data digits --out "$OUT/model.pt"

# ---- later steps append here, one command each, reading $OUT/model.pt and writing under $OUT: ----
# 2. convert   (spk-convert ...)
# 3. parity    (simulator vs. PyTorch reference)
# 4. report

echo "demo: done; outputs in $OUT/"
