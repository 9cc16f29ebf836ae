# Sourced by scripts/run and scripts/test: make sure .venv exists with the project installed.
# Usage: source scripts/env.sh [runtime|dev]
set -euo pipefail
want="${1:-runtime}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PYTHON="${PYTHON:-python3}"

# pip.conf on some machines names local indexes that do not exist; keep pip's warnings about them quiet.
pip_install() { .venv/bin/python -m pip install -q "$@" 2> >(grep -v 'is ignored: it is neither' >&2); }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "Token Factory needs Python 3.11 or newer as '$PYTHON' (set PYTHON=/path/to/python3.11)." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "Installing python3-venv (Debian ships venv separately)..." >&2
    as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv >/dev/null
  fi
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$want-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Installing dependencies into .venv ($want)..." >&2
  pip_install --upgrade pip >/dev/null
  if [ "$want" = dev ]; then
    pip_install -e '.[dev]'
  else
    pip_install -e .
  fi
  touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
