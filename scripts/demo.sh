#!/usr/bin/env bash
# The demo: index the sample photos in data/samples/ (config.yaml) and open the search UI.
set -euo pipefail
cd "$(dirname "$0")/.."
CLI=.venv/bin/clipsearch
"$CLI" index
exec "$CLI" ui
