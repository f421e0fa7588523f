#!/usr/bin/env bash
# Ferry's one test command: installs what the tests need, then runs every
# gate. CI runs it through .ci/run; run it the same way on your machine:
#
#     scripts/test.sh
#
# Steps: install kcat, etcd, the Python Kafka clients, moto and s3s-fs (only
# if missing), then
# cargo fmt --check, cargo clippy -D warnings, and cargo test for the whole
# workspace. Any failure stops the script with a non-zero exit and names the
# step. Set FERRY_TEST_SKIP_INSTALL=1 to skip the install step.
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Pinned client versions, for the golden-capture script's self-check and for
# regenerating fixtures (protocol/tests/golden/capture.py).
CONFLUENT_KAFKA_VERSION=2.16.1
KAFKA_PYTHON_VERSION=3.0.12
# kafka-python's codecs (snappy, lz4, zstd), and moto's S3 server with boto3
# for the tests that run a node on a real S3-protocol server.
PYTHON_EXTRAS=("python-snappy==0.7.3" "lz4==4.4.5" "zstandard==0.25.0" "moto[server]==5.2.1")

STEP="setup"
START_S=$SECONDS
trap 'status=$?; echo; echo "scripts/test.sh: FAILED at step \"$STEP\" (exit $status) after $((SECONDS - START_S))s" >&2; exit $status' ERR

step() {
    STEP="$1"
    echo
    echo "==> $STEP ($((SECONDS - START_S))s)"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "need root (or sudo) for: $*" >&2
        return 1
    fi
}

install_debian_packages() {
    local missing=()
    command -v kcat >/dev/null || missing+=(kcat)
    # The TLS tests encrypt a key as operators do, with openssl; ferry-bench's
    # librdkafka links the system's OpenSSL (for SASL_SSL loads).
    command -v openssl >/dev/null || missing+=(openssl)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
    # The etcd coordinator's tests run a real etcd. protoc is for the test
    # that regenerates the etcd client's checked-in messages (building
    # ferry itself needs no protoc).
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v protoc >/dev/null || missing+=(protobuf-compiler)
    # The three-zone test builds network namespaces (ip) and reads each
    # node's /metrics from inside them (curl).
    command -v ip >/dev/null || missing+=(iproute2)
    command -v curl >/dev/null || missing+=(curl)
    # Debian's python3 makes virtual environments only with python3-venv.
    python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
    if [ ${#missing[@]} -eq 0 ]; then
        echo "Debian packages: already installed"
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Try the package lists the machine has; update them only if that fails.
    if ! as_root apt-get install -y --no-install-recommends "${missing[@]}"; then
        as_root apt-get update
        as_root apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}

# The Python clients and servers go into a virtual environment of the
# project's own (FERRY_VENV, default .venv), never into the system Python,
# which may refuse `pip install` (PEP 668). Every step after the install
# runs with it first on PATH, so tests that start `python3` get it.
VENV="${FERRY_VENV:-$PWD/.venv}"

make_venv() {
    if [ -x "$VENV/bin/python3" ]; then
        return 0
    fi
    python3 -m venv "$VENV"
}

install_python_packages() {
    local wanted=("confluent-kafka==$CONFLUENT_KAFKA_VERSION" "kafka-python==$KAFKA_PYTHON_VERSION" "${PYTHON_EXTRAS[@]}")
    make_venv
    if "$VENV/bin/python3" - "${wanted[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
for spec in sys.argv[1:]:
    name, wanted = spec.split("==")
    name = name.split("[")[0]
    try:
        if version(name) != wanted:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
    then
        echo "Python packages: already installed"
        return 0
    fi
    "$VENV/bin/python3" -m pip install --disable-pip-version-check --no-input --quiet "${wanted[@]}"
}

# The second S3-protocol server the tests run on (beside moto): s3s-fs,
# which answers some requests differently (a suffix range longer than the
# object gets a 500). Built from crates.io, about 3 minutes.
S3S_FS_VERSION=0.14.1

install_s3s_fs() {
    local bin="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
    if [ -x "$bin" ] && grep -q "s3s-fs $S3S_FS_VERSION" "${CARGO_HOME:-$HOME/.cargo}/.crates.toml" 2>/dev/null; then
        echo "s3s-fs $S3S_FS_VERSION: already installed"
        return 0
    fi
    cargo install "s3s-fs@$S3S_FS_VERSION" --locked --features binary
}

require_tool() {
    if ! "$@" >/dev/null 2>&1; then
        echo "missing tool: '$*' does not run (rustup component add rustfmt clippy)" >&2
        return 1
    fi
}

if [ "${FERRY_TEST_SKIP_INSTALL:-0}" != 1 ]; then
    step "install test dependencies"
    install_debian_packages
    install_python_packages
    install_s3s_fs
fi

if [ ! -x "$VENV/bin/python3" ]; then
    echo "no Python environment at $VENV: run without FERRY_TEST_SKIP_INSTALL=1 once" >&2
    false
fi
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"

step "check tools and clients"
require_tool cargo fmt --version
require_tool cargo clippy --version
python3 protocol/tests/golden/capture.py --check-clients

# Use the committed lock file when there is one, so CI builds what was tested.
locked=()
if [ -f Cargo.lock ] && git ls-files --error-unmatch Cargo.lock >/dev/null 2>&1; then
    locked=(--locked)
fi

step "cargo fmt --check"
cargo fmt --all --check
# The fuzz crate is outside the workspace; rustfmt checks its files directly
# (cargo fmt would have to resolve its dependencies first).
rustfmt --edition 2021 --check protocol/fuzz/fuzz_targets/*.rs

step "cargo clippy -D warnings"
cargo clippy "${locked[@]}" --workspace --all-targets -- -D warnings

step "cargo test"
test_log=$(mktemp)
cargo test "${locked[@]}" --workspace 2>&1 | tee "$test_log"
# One closing count over every test binary, so the last line speaks for the
# whole run rather than for the last (possibly empty) binary.
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i } } END { print p + 0, f + 0 }' "$test_log")
rm -f "$test_log"
if [ "$passed" -eq 0 ]; then
    echo "cargo test ran no test" >&2
    false
fi

trap - ERR
echo
echo "scripts/test.sh: OK: install, fmt, clippy and every test passed in $((SECONDS - START_S))s"
echo "tests: $passed passed, $failed failed"
