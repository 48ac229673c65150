#!/usr/bin/env bash
# Rebuilds the browser files the repository vendors, from the npm lockfile beside this script:
#   tests/e2e/vendor/axe.min.js (+ its licences): axe-core, injected by the builder's browser
#   tests to find accessibility violations.
#   src/python/nectar/core/static/vendor/swagger-ui/ (+ its licence and notice): Swagger UI, the
#   interactive documentation of core's API at /api/v1/docs (started by static/api-docs.js, so the
#   CSP keeps script-src 'self'). Nothing is loaded from a CDN.
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
swagger="$root/src/python/nectar/core/static/vendor/swagger-ui"
mkdir -p "$swagger"
for file in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE; do
  cp "node_modules/swagger-ui-dist/$file" "$swagger/$file"
done
rm -rf node_modules
lock="require('./package-lock.json').packages"
echo "vendored axe-core $(node -p "$lock['node_modules/axe-core'].version")," \
  "swagger-ui-dist $(node -p "$lock['node_modules/swagger-ui-dist'].version")"
