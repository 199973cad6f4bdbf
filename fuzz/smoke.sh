#!/usr/bin/env bash
# Fuzz smoke run: builds every fuzz target once (release, debug assertions on, no
# sanitizer, so the stable toolchain does), then runs each for FUZZ_SECONDS (default 30)
# from its committed seed corpus. New inputs go to a scratch corpus, never into
# fuzz/corpus/. Exits non-zero on the first crash and says where the crashing input is.
# See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
flags=(--fuzz-dir fuzz -O -a -s none)

# target and the largest input it is given, bytes (the seeds must fit).
targets=(
    "config 16384"
    "abi_from_plugin 4096"
    "abi_from_host 4096"
    "catalog 32768"
    "trace 4096"
    "profile_import 4096"
    "metrics_triton 4096"
    "metrics_torchserve 4096"
    "rayserve_answers 8192"
    "router 4096"
)

echo "== fuzz: build (release, debug assertions)"
build_start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "built in $(($(date +%s) - build_start)) s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

for entry in "${targets[@]}"; do
    read -r target max_len <<<"$entry"
    echo "== fuzz: $target for ${seconds} s (max_len $max_len)"
    mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
    if ! cargo fuzz run "${flags[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/"; then
        echo "error: fuzz target $target failed; the input that made it fail is in" \
            "fuzz/artifacts/$target/:" >&2
        ls -l "fuzz/artifacts/$target/" >&2 || true
        echo "replay it with: cargo fuzz run ${flags[*]} $target fuzz/artifacts/$target/FILE" >&2
        exit 1
    fi
done
echo "== fuzz: all targets ran ${seconds} s without a crash"
