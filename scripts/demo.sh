#!/usr/bin/env bash
# The demo: index the sample photos in data/samples/ (config.yaml) and open the search UI.
set -euo pipefail
cd "$(dirname "$0")/.."
CLI=.venv/bin/clipsearch
"$CLI" index
if "$CLI" ui --help >/dev/null 2>&1; then
    exec "$CLI" ui
fi
# Until the browser UI lands: show what the index answers from the shell.
for q in "a rocket launch" "a cat" "coins on a table"; do
    echo "== $q"
    "$CLI" search "$q" -k 3
done
