#!/usr/bin/env bash
# Tools the test suite drives as real clients and engines: GDAL's ogr2ogr (OGC API - Features driver "OAPIF"),
# a Java 17+ runtime for the Spark engine (PySpark), wrk for the load runs (bench/load.py) and Debian's Chromium
# with CJK fonts for the browser tests (Playwright drives it; Playwright's own browser download is not used), and
# poppler's pdftoppm to render the portal's printed report.
# Installs Debian's packages when missing and running as root; otherwise says what to do.
set -euo pipefail
say() { printf '[ensure-test-tools] %s\n' "$*" >&2; }
need=()
command -v ogr2ogr >/dev/null 2>&1 || need+=(gdal-bin)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || need+=(fonts-noto-cjk)
command -v pdftoppm >/dev/null 2>&1 || need+=(poppler-utils)
if ! command -v java >/dev/null 2>&1 || ! java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])'; then
  need+=(default-jre-headless)
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "installing ${need[*]} for the client and Spark tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
else
  say "missing: ${need[*]}. Install them and run again:  sudo apt-get install -y ${need[*]}"
  exit 1
fi
