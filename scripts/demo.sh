#!/usr/bin/env bash
# Run `replicator demo` in throwaway pools and an sshd on loopback, after installing
# whatever is missing. Arguments go to the demo command.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
exec uv run --frozen replicator demo "$@"
