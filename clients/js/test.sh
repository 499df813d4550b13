#!/usr/bin/env bash
# Runs every test of @tether/client from a clean clone: installs what is
# missing (Node.js and npm, Chromium: with apt-get, as root or through
# passwordless sudo; the npm packages: npm ci), builds the tether binary
# once, then runs test/run.js: the type check, the unit tests, and against
# a real `tether dev` on free ports the integration tests and the
# conformance suite in Node and in headless Chromium.
#
#   clients/js/test.sh            everything
#   clients/js/test.sh --unit     type check and unit tests only
#
# $TETHER_BIN: use this tether binary instead of building one.
# $CHROMIUM_PATH: use this Chromium instead of /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")"

say() { echo "clients/js/test.sh: $*" >&2; }

apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; else
      say "cannot install $* (not root, no passwordless sudo): install them and run again"; exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    say "cannot install $* (no apt-get): install them and run again"; exit 1
  fi
  say "installing $*"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ -z "${CHROMIUM_PATH:-}" ] && ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ] && [[ " $* " != *" --unit "* ]]; then
  missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

if [ ! -d node_modules ]; then
  say "node_modules missing: npm ci"
  npm ci --no-audit --no-fund
fi

tmp=""
cleanup() { if [ -n "$tmp" ]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT
if [ -z "${TETHER_BIN:-}" ] && [[ " $* " != *" --unit "* ]]; then
  tmp="$(mktemp -d)"
  say "building tether"
  (cd ../.. && go build -o "$tmp/tether" .)
  export TETHER_BIN="$tmp/tether"
fi

node --version
node test/run.js "$@"
