#!/usr/bin/env bash
# The main job on the bundled example: simulate the small hinge dataset (seeded, so always the same
# data), then run the DynaMight pipeline on it:
#   consensus reconstruction -> optimize-deformations -> optimize-inverse-deformations
#   -> deformable-backprojection -> explore-latent-space --headless
# Usage: run_example.sh VENV_BIN OUTPUT_DIRECTORY
set -euo pipefail
bin=$1
out=$2
mkdir -p "$out"
"$bin/dynamight" simulate --output-directory "$out/data" --n-particles 1500 --box-size 32 --pixel-size 4 \
    --snr 0.3 --motion hinge --seed 0
"$bin/dynamight" reconstruct --refinement-star-file "$out/data/particles.star" \
    --output-directory "$out/consensus" --mask-file "$out/data/mask.mrc"
"$bin/dynamight" optimize-deformations --refinement-star-file "$out/data/particles.star" \
    --output-directory "$out/run" --initial-model "$out/data/map.mrc" --mask-file "$out/data/mask.mrc" \
    --n-gaussians 300 --n-latent-dimensions 2 --n-epochs 30 --batch-size 64
"$bin/dynamight" optimize-inverse-deformations "$out/run" --n-epochs 10
"$bin/dynamight" deformable-backprojection "$out/run" --mask-file "$out/data/mask.mrc"
"$bin/dynamight" explore-latent-space "$out/run" --headless
echo
echo "done. In $out:"
echo "  consensus/            plain half-maps, map.mrc, fsc.star, fsc.pdf"
echo "  run/forward_deformations/latents.star   each particle's latent code (and checkpoints)"
echo "  run/backprojection/   map_half1.mrc, map_half2.mrc, map.mrc, fsc.star, fsc.pdf (deformable)"
echo "  run/latent_space/     the latent space coloured by motion, clusters, maps, movies"
