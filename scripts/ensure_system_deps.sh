#!/usr/bin/env bash
# Install the Debian packages AlignLab needs when they are missing: `demo` (the demo's photo sets) or
# `test` (plus PostgreSQL server binaries, Chromium and nginx for the real-component tests).
set -euo pipefail
purpose=${1:-test}
missing=()
for package in tuxpaint-stamps-default dataset-fashion-mnist; do  # demo photo sets
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [[ "$purpose" == test ]]; then
  command -v chromium >/dev/null || missing+=(chromium)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
  [[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || missing+=(nginx)
fi
((${#missing[@]})) || exit 0

echo "Installing Debian packages: ${missing[*]}"
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
