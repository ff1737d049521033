#!/usr/bin/env bash
# Idempotent environment setup: creates .venv with Python 3.10 and installs this project (editable, with the
# dev extra) whenever pyproject.toml changed since the last install. Fast (<5 s) when nothing changed.
# Run it directly, or source it (scripts/demo.sh and scripts/test.sh do): it then leaves the shell in the
# repository root with VENV, PY and PATH (.venv/bin first) exported.

_spk_py310_ok() { [ -x "$1" ] && "$1" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; }

_spk_find_python310() {
    local cand
    if command -v python3.10 >/dev/null 2>&1 && _spk_py310_ok "$(command -v python3.10)"; then
        command -v python3.10; return 0
    fi
    if command -v pyenv >/dev/null 2>&1; then
        for cand in "$(pyenv root)"/versions/3.10.*/bin/python3.10; do
            if _spk_py310_ok "$cand"; then echo "$cand"; return 0; fi
        done
    fi
    for cand in "$HOME"/.pyenv/versions/3.10.*/bin/python3.10 /usr/local/bin/python3.10 /usr/bin/python3.10; do
        if _spk_py310_ok "$cand"; then echo "$cand"; return 0; fi
    done
    return 1
}

_spk_setup() {
    local root base sha stamp
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    cd "$root" || return 1
    VENV="$root/.venv"
    PY="$VENV/bin/python"

    if ! _spk_py310_ok "$PY"; then
        if ! base="$(_spk_find_python310)"; then
            echo "setup: error: Python 3.10 is required (lava-nc 0.10.0 and lava-dl 0.6.0 refuse 3.11 and newer)," \
                 "but no working python3.10 was found on PATH or under pyenv; install one, e.g. 'pyenv install 3.10'." >&2
            return 1
        fi
        echo "setup: creating .venv with $base" >&2
        rm -rf "$VENV"
        "$base" -m venv "$VENV" || return 1
        "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 || return 1
    fi

    sha="$(sha256sum pyproject.toml | cut -c1-16)" || return 1
    stamp="$VENV/.installed-$sha"
    if [ ! -f "$stamp" ]; then
        echo "setup: installing spikformer-deploy and its dependencies into .venv (pyproject.toml changed)" >&2
        "$PY" -m pip install --quiet --disable-pip-version-check -e '.[dev]' >&2 \
            || { echo "setup: error: pip install failed" >&2; return 1; }
        # Also put the repository root on sys.path, so top-level packages added after this install (a new
        # folder with an __init__.py) import everywhere, console scripts included, without a reinstall.
        "$PY" -c 'import sys, sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()["purelib"], "spikformer_deploy_root.pth").write_text(sys.argv[1] + "\n")' "$root" \
            || return 1
        rm -f "$VENV"/.installed-*
        touch "$stamp"
    fi
    export VENV PY
    case ":$PATH:" in *":$VENV/bin:"*) ;; *) export PATH="$VENV/bin:$PATH" ;; esac
    return 0
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    _spk_setup || return 1
else
    set -euo pipefail
    _spk_setup || exit 1
fi
