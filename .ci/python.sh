#!/usr/bin/env bash
# The Python binding (python/): builds its abi3 wheel (maturin, through pip's PEP 517 build,
# as `pip install ./python` does), installs it in a fresh virtualenv, runs the README's
# Python test command (`pytest python/tests`) and a quick `python -m pidring.bench`.
# Needs python3 with venv, and PyPI (maturin, pytest).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
"$python" --version

# Reuse what the workspace build already compiled (same profile): only what differs is built.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
venv="$work/venv/bin"
"$venv/pip" install --quiet --disable-pip-version-check pytest

# One wheel for every CPython >= 3.9: check the tag says so.
"$venv/pip" wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$work/dist" ./python
wheel="$(ls "$work"/dist/pidring-*.whl)"
echo "built $(basename "$wheel")"
case "$(basename "$wheel")" in
    *-cp39-abi3-*) ;;
    *) echo "python.sh: the wheel is not abi3 for CPython >= 3.9" >&2; exit 1 ;;
esac
"$venv/pip" install --quiet --disable-pip-version-check "$wheel"

# From the repository root, as the README says; the installed package is what is imported.
"$venv/pytest" python/tests -q -p no:cacheprovider
"$venv/python" -m pidring.bench --quick
