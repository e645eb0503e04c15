#!/usr/bin/env bash
# Run the test suite, after installing whatever is missing. Arguments go to pytest.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
# -ra lists every skip with its reason, so a test that did not run is never silent.
exec uv run --frozen pytest -ra "$@"
