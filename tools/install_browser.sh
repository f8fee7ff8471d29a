#!/usr/bin/env bash
# Make a headless Chromium available for the HTML report's browser test
# (tests/test_report_html.py opens the page, runs its self-test and takes a screenshot).
# Does nothing when chromium, chromium-browser or google-chrome is on PATH already; else
# installs Debian's `chromium` package with apt-get (about 40 s), through sudo when not
# root. CI runs it before `make test` and sets VLMBENCH_REQUIRE_BROWSER=1, so the test
# fails there instead of skipping.
set -euo pipefail
for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null 2>&1; then
    echo "install_browser: $name is on PATH already ($(command -v "$name")): nothing to do"
    exit 0
  fi
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: no chromium on PATH and no apt-get to install one: install" \
    "chromium (or google-chrome) yourself" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "install_browser: no chromium on PATH; installing it needs root and there is no" \
      "sudo: run 'apt-get install chromium' as root" >&2
    exit 1
  fi
fi
echo "install_browser: no chromium on PATH: installing Debian's chromium (${sudo[*]:+sudo }apt-get update && apt-get install -y --no-install-recommends chromium)"
export DEBIAN_FRONTEND=noninteractive
if ! { "${sudo[@]}" apt-get update -qq && \
       "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
  echo "install_browser: apt-get could not install chromium (see above)" >&2
  exit 1
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "install_browser: apt-get installed chromium but no 'chromium' is on PATH" >&2
  exit 1
fi
echo "install_browser: $(chromium --version 2>/dev/null || echo chromium) installed"
