#!/usr/bin/env bash
# Create .venv and install trl-causal with its dev extras.
# torch goes first, pinned: a bare `torch` requirement would pull GBs of CUDA packages. Override
# TORCH_SPEC (e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu") elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "setup: installing $TORCH_SPEC ..."
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q --disable-pip-version-check $TORCH_SPEC
echo "setup: installing trl-causal[dev] ..."
.venv/bin/python -m pip install -q --disable-pip-version-check "setuptools>=68" -e ".[dev]"
echo "setup: installing the example plugin plugins/weighted_sft ..."
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e ./plugins/weighted_sft
echo "setup: done ($(.venv/bin/python -c 'import trl, transformers, torch; print(f"trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")'))"
echo "setup: creating .venv-axolotl for the Axolotl integration (scripts/setup_axolotl.sh) ..."
status=0
bash scripts/setup_axolotl.sh || status=$?
if [ "$status" -eq 3 ]; then  # no Python >= 3.12: .venv works without the Axolotl integration
    echo "setup: WARNING: .venv-axolotl was not built (no Python >= 3.12); the Axolotl tests skip, or fail under CI=true." >&2
elif [ "$status" -ne 0 ]; then
    exit "$status"
fi
