#!/usr/bin/env bash
# Builds the .deb and .rpm packages of infadaptd: a `dist` build of the daemon and the
# backend plugins, the man pages and shell completions generated from the binary, then
# `cargo deb --no-build` and `cargo generate-rpm`. Packages land in OUT_DIR (default
# target/packages under the cargo target directory); their paths are printed at the end.
# Needs cargo-deb and cargo-generate-rpm (see packaging/README.md for the pinned versions).
set -euo pipefail
cd "$(dirname "$0")/.."

# The backend plugin crates the packages ship (each also has one asset line per format in
# daemon/Cargo.toml and one line in packaging/expected-files.txt).
PLUGIN_CRATES=(infadapt-plugin-sim infadapt-plugin-process infadapt-plugin-torchserve infadapt-plugin-triton infadapt-plugin-rayserve)

TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
PROFILE=dist
OUT_DIR=${OUT_DIR:-$TARGET_DIR/packages}
ASSETS=$TARGET_DIR/$PROFILE/packaging-assets

for tool in cargo-deb cargo-generate-rpm; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: $tool is not installed (see packaging/README.md)" >&2
        exit 1
    fi
done

echo "== build ($PROFILE profile)"
# One build per crate: cargo unifies features within one build, and a plugin without TLS
# (the support crate's `tls` feature) would get it from another plugin built beside it.
for crate in infadaptd "${PLUGIN_CRATES[@]}"; do
    cargo build --locked --profile "$PROFILE" -p "$crate"
done

echo "== man pages and completions"
rm -rf "$ASSETS"
"$TARGET_DIR/$PROFILE/infadaptd" generate-assets "$ASSETS" >/dev/null
gzip -9 --no-name "$ASSETS"/man/*.1

echo "== packages"
rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
cargo deb --locked --no-build --profile "$PROFILE" -p infadaptd --output "$OUT_DIR"
cargo generate-rpm --profile "$PROFILE" -p daemon --target-dir "$TARGET_DIR" --output "$OUT_DIR"
ls -l "$OUT_DIR"
