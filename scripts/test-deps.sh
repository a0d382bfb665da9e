#!/usr/bin/env bash
# System packages the tests need: headless Chromium and its driver for the UI end-to-end test;
# Tesseract (English data included) and DejaVu fonts for the OCR tests. Only what is missing.
# CI runs as root on a fresh machine; elsewhere, print what to install.
set -euo pipefail
missing=()
[[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] || missing+=(chromium chromium-driver)
command -v tesseract >/dev/null || missing+=(tesseract-ocr)
[[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} (Debian packages) for the browser and OCR tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "the tests need Debian packages: sudo apt-get install ${missing[*]}" >&2
fi
