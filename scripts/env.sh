# Sourced by scripts/run and scripts/test: make sure .venv exists, on Python 3.12 or newer, with the
# project installed. Usage: source scripts/env.sh [runtime|dev]
set -euo pipefail
want="${1:-runtime}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# pip.conf on some machines names local indexes that do not exist; keep pip's warnings about them quiet.
pip_install() { .venv/bin/python -m pip install -q "$@" 2> >(grep -v 'is ignored: it is neither' >&2); }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

# The interpreter: $PYTHON if set, else the first 3.12+ of python3.13, python3.12, python3, pyenv's
# installed versions (newest first) and /usr/bin/python3.x.
find_python() {
  local candidate
  for candidate in python3.13 python3.12 python3 \
      $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.*/bin/python3 2>/dev/null | sort -rV) \
      $(ls /usr/bin/python3.[0-9]* 2>/dev/null | grep -E '/python3\.[0-9]+$' | sort -rV); do
    if new_enough "$candidate"; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

if [ -n "${PYTHON:-}" ]; then
  if ! new_enough "$PYTHON"; then
    echo "env.sh: PYTHON=$PYTHON is not Python 3.12 or newer; Token Factory needs 3.12+." >&2
    exit 1
  fi
elif ! PYTHON="$(find_python)"; then
  cat >&2 <<'EOF'
env.sh: Token Factory needs Python 3.12 or newer, and none was found (tried python3.13,
python3.12, python3, ~/.pyenv/versions/*, /usr/bin/python3.x). Install one, then run this again:
  Debian 13 / Ubuntu 24.04 or later:  sudo apt-get install python3 python3-venv
  any system, with pyenv:              pyenv install 3.13 && pyenv local 3.13
or point PYTHON at one: PYTHON=/path/to/python3.13 scripts/run
EOF
  exit 1
fi

if [ -x .venv/bin/python ] && ! new_enough .venv/bin/python; then
  echo "env.sh: .venv is on $(.venv/bin/python -V 2>&1), older than 3.12: recreating it with $PYTHON" >&2
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "env.sh: installing python3-venv (Debian ships venv separately)..." >&2
    as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv >/dev/null
  fi
  echo "env.sh: creating .venv with $("$PYTHON" -V 2>&1) ($PYTHON)" >&2
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$want-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  started=$SECONDS
  echo "env.sh: installing dependencies into .venv ($want; the first time takes a few minutes)..." >&2
  pip_install --upgrade pip >/dev/null
  # The project's own code runs from this folder: only its dependencies are installed (not as
  # editable, which would print setuptools' editable-install banner for nothing).
  if [ "$want" = dev ]; then
    pip_install '.[dev]'
  else
    pip_install .
  fi
  touch "$stamp"
  echo "env.sh: dependencies installed in $((SECONDS - started)) s" >&2
fi
export PATH="$root/.venv/bin:$PATH"
