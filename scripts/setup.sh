#!/usr/bin/env bash
# Prepare this Debian 12 machine to run replicator's tests and demo; safe to run again.
#
# Installs the missing system packages (needs root), makes sure `uv` is available and
# syncs the project's virtualenv from uv.lock. Source it instead of running it to also
# get `uv` on PATH afterwards (scripts/test.sh and scripts/demo.sh do).
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
packages=(btrfs-progs zfs-fuse openssh-server openssh-client python3 python3-venv util-linux zstd btrbk
          postgresql mariadb-server age)
# shellcheck source=scripts/uv.sh
source "$repo/scripts/uv.sh"

install_packages() {
    local missing=() package
    for package in "${packages[@]}"; do
        if ! dpkg-query --show --showformat='${Status}' "$package" 2>/dev/null |
            grep -q 'install ok installed'; then
            missing+=("$package")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    if ((EUID != 0)); then
        echo "setup.sh: run as root to install: ${missing[*]}" >&2
        return 1
    fi
    echo "setup.sh: installing ${missing[*]}" >&2
    # The test bed starts zfs-fuse and sshd itself while it needs them; keep the
    # packages' maintainer scripts from starting them as services.
    local policy=/usr/sbin/policy-rc.d ours=no status=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        ours=yes
    fi
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" </dev/null
    } || status=$?
    if [[ $ours == yes ]]; then
        rm -f "$policy"
    fi
    return "$status"
}

install_packages
ensure_uv
(cd -- "$repo" && uv sync --frozen --quiet)
