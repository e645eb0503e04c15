# Sourced by setup.sh and install.sh: puts `uv` (pinned) on PATH, installing it into a venv of
# its own when it is missing. Debian's python3 refuses `pip install` outside a virtualenv.
uv_version=0.13.9
tools_venv=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/replicator-tools

ensure_uv() {
    if command -v uv >/dev/null; then
        return 0
    fi
    if [[ ! -x $tools_venv/bin/uv ]]; then
        echo "installing uv $uv_version into $tools_venv" >&2
        /usr/bin/python3 -m venv "$tools_venv"
        "$tools_venv/bin/python" -m pip install --quiet "uv==$uv_version"
    fi
    export PATH="$tools_venv/bin:$PATH"
}
