#!/usr/bin/env bash
# Rebuilds the chart library the plugin's pages load (plugins/static/echarts.min.js)
# from the npm registry, at the exact version and integrity hash recorded in
# plugins/assets/package-lock.json (npm ci refuses a tarball whose hash differs).
#
# The built file is committed, so installing the package, running the API server and
# running the tests need neither node nor the network; run this script (it needs npm)
# after changing the version in plugins/assets/package.json:
#
#   (cd plugins/assets && npm install --package-lock-only --ignore-scripts) && scripts/build_ui_assets.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ASSETS="$ROOT/plugins/assets"
STATIC="$ROOT/plugins/static"
command -v npm >/dev/null 2>&1 || { echo "build_ui_assets: npm not found (Debian: apt-get install -y npm)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$ASSETS/package.json" "$ASSETS/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --silent)
mkdir -p "$STATIC"
cp "$work/node_modules/echarts/dist/echarts.min.js" "$STATIC/echarts.min.js"
cp "$work/node_modules/echarts/LICENSE" "$STATIC/echarts.LICENSE"
version="$(node -p "require('$work/node_modules/echarts/package.json').version")"
echo "build_ui_assets: echarts $version -> $STATIC/echarts.min.js"
