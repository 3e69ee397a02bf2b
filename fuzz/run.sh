#!/usr/bin/env bash
# Builds and runs mcphop's fuzz targets for a set time, then prints the
# executions each made. Usage:
#   fuzz/run.sh TARGET SECONDS     one target
#   fuzz/run.sh all SECONDS        every target, one after another
#   fuzz/run.sh list               the target names
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain,
# RUSTC_BOOTSTRAP=1 lets rustc take the -Z flags cargo-fuzz passes; set
# FUZZ_SANITIZER=none where the address sanitizer runtime is missing, and
# FUZZ_NICE (default 19) to run below other work. Each target starts from
# its committed seeds (fuzz/seeds/TARGET) and grows a git-ignored corpus
# (fuzz/corpus/TARGET); a crash lands in fuzz/artifacts/TARGET and the
# script exits non-zero.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

TARGETS=(http_request http_response sse lines jsonrpc endpoint)
SANITIZER="${FUZZ_SANITIZER:-address}"
NICE="${FUZZ_NICE:-19}"
export RUSTC_BOOTSTRAP=1

usage() {
    echo "usage: $0 TARGET|all SECONDS   (targets: ${TARGETS[*]})" >&2
    exit 2
}

[ "${1:-}" = list ] && { printf '%s\n' "${TARGETS[@]}"; exit 0; }
[ $# -eq 2 ] || usage
what="$1"
seconds="$2"
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || usage
if [ "$what" = all ]; then
    selected=("${TARGETS[@]}")
else
    found=0
    for t in "${TARGETS[@]}"; do [ "$t" = "$what" ] && found=1; done
    [ "$found" = 1 ] || usage
    selected=("$what")
fi

# One build for every target: debug assertions and overflow checks on
# (cargo-fuzz's default), so a broken debug_assert! is a crash too.
nice -n "$NICE" cargo fuzz build --sanitizer "$SANITIZER"

status=0
summary=()
for target in "${selected[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="artifacts/$target/last-run.log"
    echo "== $target for ${seconds}s (log: fuzz/$log)"
    set +e
    nice -n "$NICE" cargo fuzz run --sanitizer "$SANITIZER" "$target" \
        "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    secs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "corpus/$target" -type f | wc -l)
    if [ "$rc" -eq 0 ]; then
        result="no crash"
    else
        result="CRASH (exit $rc): see fuzz/$log and fuzz/artifacts/$target/"
        status=1
    fi
    line="$target: ${execs:-?} executions (${secs:-?}/s) in ${seconds}s, corpus $corpus, $result"
    echo "$line"
    summary+=("$line")
done

echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$status"
