#!/usr/bin/env bash
# Create .venv-axolotl: Python 3.12 + axolotl 0.21.0 (CPU-usable) + trl-causal + trl-causal-axolotl (editable).
# Called by scripts/setup.sh; tests/test_axolotl.py runs `axolotl train` from this venv.
#
# axolotl 0.21 needs Python >= 3.12 and pins trl 1.14.1 / transformers 5.20.1, so it cannot share .venv
# (Python 3.11, trl 1.16). A plain `pip install axolotl==0.21.0` backtracks for minutes over its optional
# service packages and pulls GPU-only kernels, so axolotl goes in with --no-deps and the packages its training
# path imports come from plugins/axolotl/requirements-cpu.txt (axolotl's own pins).
#   AXOLOTL_PYTHON   the Python >= 3.12 interpreter (default: python3.12 on PATH, else pyenv's 3.12.x, python3.13,
#                    python3); without one this script exits 3 and setup.sh carries on without the integration
#   TORCH_SPEC_AXOLOTL torch requirement (default torch==2.13.0: on PyPI that is the CUDA build, which runs on CPU)
#   SKIP_AXOLOTL=1   skip this step (tests/test_axolotl.py then skips locally, and fails under CI=true)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SKIP_AXOLOTL:-0}" = "1" ]; then
    echo "setup_axolotl: skipped (SKIP_AXOLOTL=1)"
    exit 0
fi
VENV="${AXOLOTL_VENV:-.venv-axolotl}"
is_312() { [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 12))' >/dev/null 2>&1; }
PY="${AXOLOTL_PYTHON:-}"
if [ -z "$PY" ]; then  # a pyenv shim may exist and still fail, so each candidate is tried
    for candidate in python3.12 $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12.*/bin/python 2>/dev/null | sort -Vr) \
            python3.13 python3; do  # 3.12 first: axolotl 0.21's pins are built for it
        if is_312 "$candidate"; then PY="$candidate"; break; fi
    done
fi
if ! is_312 "$PY"; then
    echo "setup_axolotl: axolotl 0.21 needs Python >= 3.12; none found. Set AXOLOTL_PYTHON=/path/to/python3.12" \
        "(or SKIP_AXOLOTL=1 to skip the Axolotl integration)." >&2
    exit 3  # setup.sh carries on without the integration
fi
TORCH_SPEC="${TORCH_SPEC_AXOLOTL:-torch==2.13.0}"
STAMP="$VENV/.trl_causal_setup"
WANT="$(cat scripts/setup_axolotl.sh plugins/axolotl/requirements-cpu.txt | sha256sum | cut -c1-16) $TORCH_SPEC"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    # torch 2.13.0 for Python 3.12 on PyPI is the CUDA build: 2.6 GB of wheels are downloaded, then unpacked
    # to ~6 GB with axolotl, so the install peaks near 9 GB. Say so up front rather than leave pip's bare ENOSPC.
    free_gb=$(df -Pk "$(dirname "$VENV")" "${TMPDIR:-/tmp}" | awk 'NR > 1 { print int($4 / 1048576) }' | sort -n | head -1)
    if [ "$free_gb" -lt 9 ]; then
        echo "setup_axolotl: warning: only $free_gb GB free on the disk of $VENV or ${TMPDIR:-/tmp}; installing torch" \
            "and axolotl there needs about 9 GB while it runs (6 GB after). If pip stops with 'No space left on" \
            "device', free some space or set SKIP_AXOLOTL=1 to skip the Axolotl integration." >&2
    fi
    echo "setup_axolotl: installing $TORCH_SPEC into $VENV (Python $("$PY" -c 'import platform; print(platform.python_version())')) ..."
    # shellcheck disable=SC2086
    "${PIP[@]}" $TORCH_SPEC
    CONSTRAINTS="$(mktemp)"
    "$VENV/bin/python" -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' >"$CONSTRAINTS"
    echo "setup_axolotl: installing axolotl 0.21.0 (no GPU kernels) ..."
    "${PIP[@]}" -c "$CONSTRAINTS" -r plugins/axolotl/requirements-cpu.txt
    "${PIP[@]}" --no-deps axolotl==0.21.0 bitsandbytes==0.50.2 torchao==0.18.0
    rm -f "$CONSTRAINTS"
    echo "$WANT" >"$STAMP"
fi
echo "setup_axolotl: installing trl-causal and plugins/axolotl (editable) ..."
"${PIP[@]}" --no-deps --no-build-isolation -e . -e ./plugins/axolotl
echo "setup_axolotl: done in $(( $(date +%s) - start )) s ($("$VENV/bin/python" -c 'import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in ("axolotl", "trl", "transformers", "torch")))' 2>/dev/null))"
