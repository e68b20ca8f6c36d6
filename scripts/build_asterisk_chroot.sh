#!/usr/bin/env bash
# A real Asterisk 22 (Debian sid) in a chroot, for the `pbx` tests: built once, cached outside the repo.
#   scripts/build_asterisk_chroot.sh [ROOT]      (default $CM_ASTERISK_ROOT or /var/cache/cm-asterisk/root)
# Needs root, debootstrap and the Debian mirror (~1 min, ~500 MB). Prints the root on success.
set -euo pipefail
ROOT="${1:-${CM_ASTERISK_ROOT:-/var/cache/cm-asterisk/root}}"
MIRROR="${CM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [[ -x "$ROOT/usr/sbin/asterisk" && -f "$ROOT/.cm-complete" ]]; then
  echo "$ROOT"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && apt-get install -y -qq debootstrap
fi
# Build beside the cache and move into place only when complete: an interrupted build is never taken for one.
WORK="$ROOT.partial"
rm -rf "$WORK"
mkdir -p "$(dirname "$ROOT")"
debootstrap --variant=minbase --include=asterisk,asterisk-modules sid "$WORK" "$MIRROR" >&2
touch "$WORK/.cm-complete"
rm -rf "$ROOT"
mv "$WORK" "$ROOT"
echo "$ROOT"
