#!/usr/bin/env bash
# Make sure Debian's Chromium is installed: the browser tests (tests/browser) drive it through Playwright.
# Playwright's own browser download is not used; the tests launch the system `chromium`.
# Quiet and idempotent: does nothing when chromium is already on PATH; fails loudly when it cannot install it.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "[chromium] chromium is missing and this is not root (no sudo either): install the 'chromium' package" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

echo "[chromium] apt-get install chromium"
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq; then
  echo "[chromium] apt-get update failed" >&2
  exit 1
fi
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
  echo "[chromium] apt-get install chromium failed" >&2
  exit 1
fi

if ! command -v chromium >/dev/null 2>&1; then
  echo "[chromium] chromium is still not on PATH after the install" >&2
  exit 1
fi
echo "[chromium] $(chromium --version 2>/dev/null || echo 'installed')"
