#!/usr/bin/env bash
# The default job, end to end, on the built-in data (scikit-learn digits; nothing is downloaded).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"   # also cd's to the repository root

OUT=runs/demo
mkdir -p "$OUT"

# 1. Train the default preset and save one checkpoint (prints test accuracy, parameter count, time).
spk-train --preset digits-2-64 --data digits --out "$OUT/model.pt"

# 2. Convert: a standard NIR file, and the Loihi 2 export directory (network.h5, quantization.json, ...).
spk-convert "$OUT/model.pt" --target nir -o "$OUT/model.nir"
spk-convert "$OUT/model.pt" --target loihi -o "$OUT/loihi"

# 3. Parity, layer by layer, on the whole digits test set: float semantics must match the PyTorch model spike
#    for spike; the Loihi fixed-point simulation must predict what the float model predicts on >= 99 % of it.
spk-parity "$OUT/model.pt" --target nir --mode float --ssa binary --data digits --min-agreement 1.0 \
    --min-layer-agreement 1.0 -o "$OUT/parity_float"
spk-parity "$OUT/model.pt" --target loihi --data digits --min-agreement 0.99 -o "$OUT/parity_loihi"

# 4. Activity, synaptic operations and energy under the Loihi and 45 nm CMOS models.
spk-report "$OUT/model.pt" --target loihi --data digits --samples 360 --energy-model loihi -o "$OUT/report_loihi"
spk-report "$OUT/model.pt" --target nir --data digits --samples 360 --energy-model cmos45 -o "$OUT/report_cmos45"

# 5. The event-camera path: a small Spikformer in the official DVS layout trained on the built-in event digits
#    (saccade-rendered ON/OFF events of the same digits, T = 8 frames), converted, checked and reported the same way.
EV=$OUT/events
mkdir -p "$EV"
spk-train --preset event-digits-2-64 --data event-digits --epochs 8 --out "$EV/model.pt"
spk-convert "$EV/model.pt" --target nir -o "$EV/model.nir"
spk-convert "$EV/model.pt" --target loihi -o "$EV/loihi"
spk-parity "$EV/model.pt" --target nir --data event-digits --min-agreement 1.0 --min-layer-agreement 1.0 \
    -o "$EV/parity_float"
spk-parity "$EV/model.pt" --target loihi --data event-digits --min-agreement 0.95 -o "$EV/parity_loihi"
spk-report "$EV/model.pt" --target loihi --data event-digits --samples 360 -o "$EV/report_loihi"

# 6. Beyond Spikformer: a small Spike-driven Transformer (Yao et al. 2023; AND attention, membrane shortcut) trained
#    on the same digits, converted to Loihi 2 (its graded form), checked and reported the same way (energy by its
#    own paper's rule, attention maps of q * kv). NIR has no node for its max-pool of graded values
#    (docs/sdt_lowering.md), so it has no NIR file.
SDT=$OUT/sdt
mkdir -p "$SDT"
spk-train --preset sdt-digits-2-64 --data digits --epochs 15 --out "$SDT/model.pt"
spk-convert "$SDT/model.pt" --target loihi -o "$SDT/loihi"
spk-parity "$SDT/model.pt" --target loihi --mode float --data digits --min-agreement 1.0 --min-layer-agreement 1.0 \
    -o "$SDT/parity_float"
spk-parity "$SDT/model.pt" --target loihi --data digits --min-agreement 0.99 -o "$SDT/parity_loihi"
spk-report "$SDT/model.pt" --target loihi --data digits --samples 360 -o "$SDT/report_loihi"
#    ... and on the event digits, with the cifar10-dvs configuration's Erode (dvs_mode): 3x3 max-pools of spikes in
#    the attention, on Loihi as sum pools and threshold neurons over reshaped views
SDTEV=$OUT/sdt_events
mkdir -p "$SDTEV"
spk-train --preset sdt-event-digits-2-64 --data event-digits --epochs 15 --out "$SDTEV/model.pt"
spk-convert "$SDTEV/model.pt" --target loihi -o "$SDTEV/loihi"
spk-parity "$SDTEV/model.pt" --target loihi --mode float --data event-digits --min-agreement 1.0 \
    --min-layer-agreement 1.0 -o "$SDTEV/parity_float"
spk-parity "$SDTEV/model.pt" --target loihi --data event-digits --min-agreement 0.95 -o "$SDTEV/parity_loihi"
spk-report "$SDTEV/model.pt" --target loihi --data event-digits --samples 360 -o "$SDTEV/report_loihi"

echo "demo: done; outputs in $OUT/"
