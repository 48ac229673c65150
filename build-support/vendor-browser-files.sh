#!/usr/bin/env bash
# Rebuilds the browser files the repository vendors, from the npm lockfile beside this script:
#   tests/e2e/vendor/axe.min.js (+ its licences): axe-core, injected by the builder's browser
#   tests to find accessibility violations. Nothing is loaded from a CDN.
# The builder's own JavaScript (src/python/nectar/core/static/builder/) is plain modules with no
# build step, so it needs nothing here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$here/browser-vendor"
npm ci --no-audit --no-fund --ignore-scripts
mkdir -p "$root/tests/e2e/vendor"
cp node_modules/axe-core/axe.min.js "$root/tests/e2e/vendor/axe.min.js"
cp node_modules/axe-core/LICENSE "$root/tests/e2e/vendor/axe-core.LICENSE"
cp node_modules/axe-core/LICENSE-3RD-PARTY.txt "$root/tests/e2e/vendor/axe-core.LICENSE-3RD-PARTY.txt"
rm -rf node_modules
echo "vendored axe-core $(node -p "require('./package-lock.json').packages['node_modules/axe-core'].version")"
