#!/usr/bin/env bash
# Install the tools the tests drive, when missing, from Debian's packages: headless Chromium
# (the /docs page rendered offline) and promtool (the alert rules checked and unit tested).
# A fresh machine or CI gets them on the first `make test`; afterwards this does nothing.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-tools: install ${missing[*]} (Debian packages) for the tests that use them" >&2
  exit 1
fi
echo "ensure-tools: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt run (a parallel CI job, unattended upgrades) holds the lock for a while: wait for it.
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
apt_get update -qq
apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
