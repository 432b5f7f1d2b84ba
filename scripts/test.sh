#!/usr/bin/env bash
# Install (when needed) and run the test suite. Extra arguments go to pytest.
source "$(dirname "$0")/env.sh"
python -m pytest "$@"
