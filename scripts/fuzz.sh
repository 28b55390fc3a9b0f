#!/usr/bin/env bash
# Builds the cargo-fuzz targets of fuzz/ and runs each for SECONDS (default 30), one after
# the other; fails (exit 1) if any target finds a crash, a panic, a timeout or an
# out-of-memory input. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). See docs/FUZZING.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# The committed seeds (fuzz/corpus/<target>) are read, never written: what the fuzzer finds
# goes to fuzz/corpus-grown/<target> (ignored by git), crashing inputs to
# fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-30}"
[ "$#" -gt 0 ] && shift
ALL_TARGETS=(gguf safetensors_config tokenizer chat_template pipeline_inputs train_data)
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=("${ALL_TARGETS[@]}")
fi

# Largest input per target: the seeds' size with room to grow.
max_len() {
    case "$1" in
        gguf | tokenizer) echo 16384 ;;
        safetensors_config) echo 8192 ;;
        chat_template | train_data) echo 4096 ;;
        pipeline_inputs) echo 2048 ;;
        *) echo 4096 ;;
    esac
}

# `-a`: debug assertions and overflow checks on (an overflow is a bug we want to see).
if [ "$#" -gt 0 ]; then
    for t in "${TARGETS[@]}"; do
        cargo +nightly fuzz build -a "$t"
    done
else
    cargo +nightly fuzz build -a
fi

failed=()
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus-grown/$t"
    echo "=== fuzzing $t for ${SECONDS_PER_TARGET}s"
    log="fuzz/corpus-grown/$t.log"
    if cargo +nightly fuzz run -a "$t" "fuzz/corpus-grown/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -timeout=10 -max_len="$(max_len "$t")" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^Done ' "$log" | tail -n 2 || true
    else
        echo "!!! $t failed; the log: $log"
        grep -E 'ERROR|panicked|Test unit written' "$log" | head -n 5 || true
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found problems in: ${failed[*]}"
    exit 1
fi
echo "fuzzing: no crash in ${TARGETS[*]} (${SECONDS_PER_TARGET}s each)"
