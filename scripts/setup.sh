#!/usr/bin/env bash
# Prepare this Debian 12 machine to run replicator's tests and demo; safe to run again.
#
# Installs the missing system packages (needs root), makes sure `uv` is available and
# syncs the project's virtualenv from uv.lock. Source it instead of running it to also
# get `uv` on PATH afterwards (scripts/test.sh and scripts/demo.sh do).
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
packages=(btrfs-progs zfs-fuse openssh-server openssh-client python3 python3-venv util-linux zstd btrbk age)
uv_version=0.13.9
tools_venv=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/replicator-tools

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

ensure_uv() {
    if command -v uv >/dev/null; then
        return 0
    fi
    # Debian's python3 refuses `pip install` outside a virtualenv, so uv gets its own.
    if [[ ! -x $tools_venv/bin/uv ]]; then
        echo "setup.sh: installing uv $uv_version into $tools_venv" >&2
        python3 -m venv "$tools_venv"
        "$tools_venv/bin/python" -m pip install --quiet "uv==$uv_version"
    fi
    export PATH="$tools_venv/bin:$PATH"
}

install_packages
ensure_uv
(cd -- "$repo" && uv sync --frozen --quiet)
