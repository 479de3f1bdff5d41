#!/usr/bin/env bash
# Browser tests drive Debian's chromium through Playwright (never `playwright install`, it downloads).
set -uo pipefail
if command -v chromium >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "ensure_chromium: chromium is missing and cannot be installed here (needs root + apt-get):" \
       "browser tests will be skipped. Install it with: apt-get install chromium" >&2
  exit 1
fi
echo "ensure_chromium: installing Debian chromium for the browser tests..."
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || {
  echo "ensure_chromium: apt-get could not install chromium: browser tests will be skipped" >&2
  exit 1
}
