#!/usr/bin/env bash
# Installs what a fresh machine needs: system packages (Java 17, Maven, Go, Tesseract, kcat,
# Chromium), a Python virtual environment with Lightbox and its extras. Idempotent: a second run
# only checks.
# The schema registry also needs a Java 21+, which Debian 12 does not package: this script says
# so when none is found (`lightbox stack up` refuses to start without one).
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${LIGHTBOX_EXTRAS:-dev,ml}"
PYTHON="${PYTHON:-python3}"

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v go >/dev/null 2>&1 || need_apt+=(golang)
command -v tesseract >/dev/null 2>&1 || need_apt+=(tesseract-ocr)
command -v exiftool >/dev/null 2>&1 || need_apt+=(libimage-exiftool-perl)
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
# The browser the page tests drive through Playwright (tests/browser): Debian's, since Playwright
# cannot download its own builds here.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if ((${#need_apt[@]})); then
  echo "==> installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.lightbox-installed-$(sha256sum pyproject.toml | cut -c1-12)-${EXTRAS//,/-}"
if [ ! -f "$stamp" ]; then
  echo "==> installing lightbox[$EXTRAS] into .venv (torch from PyPI is large: the first run takes minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  rm -f .venv/.lightbox-installed-*
  touch "$stamp"
fi
# The registry's JDK is found the way `lightbox stack up` finds it (deploy/local/registry.py).
if ! jdk_error=$(.venv/bin/python -c 'from deploy.local.registry import find_jdk
from processors.config import load_settings
find_jdk(load_settings().registry)' 2>&1); then
  echo "==> warning: ${jdk_error##*StackError: }" >&2
fi
echo "==> ready: .venv/bin/lightbox"
