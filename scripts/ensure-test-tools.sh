#!/usr/bin/env bash
# Tools the test suite drives as real clients: GDAL's ogr2ogr (OGC API - Features driver "OAPIF").
# Installs Debian's gdal-bin when missing and running as root; otherwise says what to do.
set -euo pipefail
say() { printf '[ensure-test-tools] %s\n' "$*" >&2; }
if command -v ogr2ogr >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "installing gdal-bin (ogr2ogr) for the client tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq gdal-bin >/dev/null
else
  say "ogr2ogr is missing. Install it and run again:  sudo apt-get install -y gdal-bin"
  exit 1
fi
