#!/usr/bin/env bash
# Install the Debian packages the tests and the demo need, when they are missing:
# as root with apt-get, else through passwordless sudo, else say what to install.
set -euo pipefail
packages=("$@")
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "error: these Debian/Ubuntu packages are needed: ${missing[*]}" >&2
  echo "       run: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
