#!/usr/bin/env bash
# `make test-oldest` runs the suite on Python 3.10, the oldest that pyproject claims. This machine
# kind has it through pyenv; when python3.10 is not on PATH (CI's environment may lack pyenv's
# shims), link pyenv's build into /usr/local/bin. Debian 12 packages no 3.10, and a Python
# download from elsewhere is not reachable, so a machine without either fails here, saying so.
set -euo pipefail
if command -v python3.10 >/dev/null && python3.10 -c "import venv, ensurepip" 2>/dev/null; then
    echo "python3.10: $(command -v python3.10) ($(python3.10 --version 2>&1))"
    exit 0
fi
for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10.*/bin/python3.10 /root/.pyenv/versions/3.10.*/bin/python3.10; do
    if [ -x "$candidate" ]; then
        ln -sf "$candidate" /usr/local/bin/python3.10
        echo "python3.10: linked $candidate into /usr/local/bin"
        exit 0
    fi
done
echo "error: no Python 3.10 found (pyenv's versions/3.10.*); make test-oldest needs one" >&2
exit 1
