#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the pinned test peers
# into the git-ignored .peers/ folder (tests/peers/install.sh), checks
# formatting and lints, then runs every test (unit, integration with the
# real MCP clients and servers, and a smoke run of the benchmarks).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== installing test peers (pinned, into .peers/)"
bash tests/peers/install.sh

echo "== the README's first command, exactly as written, answers one initialize"
bash tests/readme_first_command.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

echo "== cargo build --examples (the integration tests run the example server binary)"
cargo build --examples

echo "== cargo test"
cargo test --all-targets
