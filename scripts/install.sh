#!/usr/bin/env bash
# Install replicator for real use, or remove it again:
#
#   sudo bash scripts/install.sh                 # install or upgrade
#   sudo bash scripts/install.sh --uninstall     # remove the program, unit and docs
#   bash scripts/install.sh --root DIR           # the same below DIR (tests, images)
#
# Installs the locked dependencies (uv.lock) and replicator into a virtualenv in /opt/replicator
# made with the system's /usr/bin/python3: root's own interpreter (pyenv, under /root) is hidden
# from the daemon by ProtectHome= and cannot be run by a forced-command user. Links
# /usr/local/bin/replicator; installs the systemd unit into /usr/local/lib/systemd/system (change
# it with `systemctl edit replicator`) and the docs it names into /usr/share/doc/replicator;
# creates /etc/replicator/config.toml from config.example.toml only if there is none. Never
# touches an existing config, the state in /var/lib/replicator or a running daemon (but
# --uninstall stops and disables it). DESTDIR=DIR works as --root DIR.
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
root=${DESTDIR:-}
python=/usr/bin/python3
action=install

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit "${1:-0}"
}

while (($#)); do
    case $1 in
    --root) root=${2:?--root needs a directory}; shift ;;
    --python) python=${2:?--python needs an interpreter}; shift ;;
    --uninstall) action=uninstall ;;
    -h | --help) usage ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
if [[ -n $root ]]; then
    mkdir -p -- "$root"
    root=$(cd -- "$root" && pwd)
fi

prefix=$root/opt/replicator
link=$root/usr/local/bin/replicator
unit=$root/usr/local/lib/systemd/system/replicator.service
docs=$root/usr/share/doc/replicator
config=$root/etc/replicator/config.toml
# Only on the machine itself, not below --root, and only where systemd runs.
if [[ -z $root && -d /run/systemd/system ]]; then systemd=yes; else systemd=no; fi

say() { echo "install.sh: $*" >&2; }

install() {
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        say "$python is missing or older than 3.11; install Debian's python3 (bookworm has 3.11) or pass --python"
        exit 2
    fi
    # shellcheck source=scripts/uv.sh
    source "$repo/scripts/uv.sh"
    ensure_uv
    # Readable by the forced-command user and the daemon, whoever's umask this shell has.
    umask 022
    say "installing into $prefix with $python"
    # --no-editable: the code is copied into the venv, not read from this checkout, which may
    # be under /root or removed later. --link-mode copy: no hard links into root's uv cache.
    (cd -- "$repo" && UV_PROJECT_ENVIRONMENT=$prefix uv sync --frozen --no-dev --no-editable \
        --python "$python" --no-python-downloads --link-mode copy --compile-bytecode --quiet)
    mkdir -p -- "$(dirname -- "$link")"
    # Relative, so that a tree installed with --root still works where it is.
    ln -sfn ../../../opt/replicator/bin/replicator "$link"
    command install -D -m 0644 "$repo/systemd/replicator.service" "$unit"
    command install -d -m 0755 "$docs" "$docs/docs"
    command install -m 0644 "$repo/README.md" "$repo/config.example.toml" \
        "$repo/systemd/authorized_keys.example" "$docs/"
    command install -m 0644 "$repo"/docs/*.md "$docs/docs/"
    command install -d -m 0755 "$(dirname -- "$config")"
    if [[ -e $config ]]; then
        say "kept the existing $config"
    else
        command install -m 0640 "$repo/config.example.toml" "$config"
        say "created $config from the example: edit it, then \`replicator check-config --live\`"
    fi
    if [[ $systemd == yes ]]; then
        systemctl daemon-reload
    fi
    say "installed $("$link" --version); start it with: systemctl enable --now replicator"
}

uninstall() {
    if [[ $systemd == yes ]] && systemctl cat replicator.service >/dev/null 2>&1; then
        systemctl disable --now replicator.service || true
    fi
    if [[ -e $prefix && ! -e $prefix/pyvenv.cfg ]]; then
        say "refusing to remove $prefix: it is not a virtualenv, so not ours"
        exit 2
    fi
    rm -rf -- "$prefix" "$docs"
    if [[ -L $link && $(readlink -- "$link") == ../../../opt/replicator/bin/replicator ]]; then
        rm -f -- "$link"
    fi
    rm -f -- "$unit"
    if [[ $systemd == yes ]]; then
        systemctl daemon-reload
    fi
    say "removed replicator; kept $root/etc/replicator and $root/var/lib/replicator (remove them by hand)"
}

"$action"
