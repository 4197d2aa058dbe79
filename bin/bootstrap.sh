# Sourced by bin/harness and bin/test: creates .venv with the harness and its pinned dependencies
# on first use, and again whenever pyproject.toml changes. Needs only python3 (3.11+).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # Two first uses at once (bin/test and bin/harness in two terminals) would install into one .venv
  # together and break it: the second waits for the first, then finds it done.
  exec 9>"$root/.venv.lock"
  flock 9
fi
if [ ! -f "$stamp" ]; then
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "cxrbench needs Python 3.11 or newer as python3 (found $(python3 --version 2>&1))" >&2; exit 1; }
  echo "Setting up the harness environment in $venv (first use, about a minute)..." >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off --no-compile -e "$root[test]" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
  "$venv/bin/python" -c "import harness, cxrbench_worker" || { echo "harness install failed" >&2; exit 1; }
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
exec 9>&- 2>/dev/null || true
