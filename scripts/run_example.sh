#!/usr/bin/env bash
# The main job on the bundled example: simulate the small hinge dataset (seeded, so always the same
# data), then run the DynaMight steps on it. Usage: run_example.sh VENV_BIN OUTPUT_DIRECTORY
set -euo pipefail
bin=$1
out=$2
mkdir -p "$out"
"$bin/dynamight" simulate --output-directory "$out/data" --n-particles 1000 --box-size 32 --pixel-size 4 \
    --snr 0.1 --motion hinge --seed 0
"$bin/dynamight" reconstruct --refinement-star-file "$out/data/particles.star" \
    --output-directory "$out/consensus" --mask-file "$out/data/mask.mrc"
echo "done: see $out/consensus (half1.mrc, half2.mrc, map.mrc, fsc.star, fsc.pdf)"
