#!/bin/sh
# Installs the Debian packages listed in tests/system-packages.txt that are missing, when run as root with
# apt-get; otherwise (or when apt-get fails) names them and how to install them. Never fails the caller: every
# test that needs a missing package skips and says which package it is.
set -u
list="$(dirname "$0")/system-packages.txt"
missing=""
for pkg in $(grep -v '^#' "$list" | awk 'NF { print $1 }'); do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $pkg"
  fi
done
if [ -z "$missing" ]; then
  echo "system packages: all present ($(grep -v '^#' "$list" | awk 'NF { printf "%s ", $1 }'))"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ -z "${EDGE_DISTILL_NO_APT:-}" ]; then
  echo "system packages: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086  # word splitting of the package list is intended
  if apt-get update -q && apt-get install -y -q $missing; then
    exit 0
  fi
  echo "system packages: apt-get could not install$missing; the tests that need them will skip." >&2
else
  echo "system packages missing:$missing -- the tests that need them will skip." >&2
  echo "  install them with: sudo apt-get install -y$missing   (or run 'make system-deps' as root)" >&2
fi
exit 0
