#!/usr/bin/env bash
# Fuzzes the readers of untrusted files with cargo-fuzz (libFuzzer), one target at a time, each
# for a fixed budget, and prints the executions per target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 240 s; pth npy int8_file)
#
# Needs `cargo install cargo-fuzz --locked`. cargo fuzz passes nightly-only flags to rustc; on a
# stable toolchain RUSTC_BOOTSTRAP=1 lets it. FUZZ_SANITIZER picks the sanitizer (default
# `address`; `none` builds faster and runs faster). The committed seeds are in fuzz/seeds/<target>;
# what libFuzzer finds goes to fuzz/corpus/<target> and crashes to fuzz/artifacts/<target>
# (both git-ignored; add a crash to tests/it/malformed_inputs.rs once fixed). Build output stays
# in fuzz/target.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-240}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(pth npy int8_file)
fi
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

summary=()
status=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/artifacts/$target/fuzz.log"
    echo "== $target: ${seconds} s (sanitizer $sanitizer), log in $log"
    # -rss_limit_mb also caps single allocations (malloc_limit_mb defaults to it): a reader
    # that allocates what a file merely declares is reported as a crash.
    if cargo fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$target" \
        "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
        >"$log" 2>&1; then
        result=ok
    else
        result="FAILED (see $log and fuzz/artifacts/$target)"
        status=1
    fi
    runs=$(grep -Eo 'stat::number_of_executed_(runs|units): *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')
    summary+=("$target: $runs executions in ${seconds} s, $result")
    tail -n 3 "$log"
done
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$status"
