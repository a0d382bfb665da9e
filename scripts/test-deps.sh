#!/usr/bin/env bash
# System packages the tests need: headless Chromium and its driver for the UI end-to-end test.
# CI runs as root on a fresh machine; elsewhere, print what to install.
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing chromium + chromium-driver (Debian packages) for the browser tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver >/dev/null
else
    echo "the UI browser test needs Chromium: sudo apt-get install chromium chromium-driver" >&2
fi
