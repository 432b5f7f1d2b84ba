#!/usr/bin/env bash
# Install (when needed) and run the main job: train a CNN on the built-in synthetic words,
# convert it, measure the SNN over T, retrain it. Extra arguments go to tools/experiment.py
# (e.g. --preset fsdd --data-dir ../shared/data/fsdd --seeds 0 1 2).
source "$(dirname "$0")/env.sh"
python tools/experiment.py "$@"
