#!/bin/sh
# The release's build step (the stack's `install`), run in the release directory. Stands in
# for `composer install --no-dev` and `npm ci && npm run build`: it writes the asset manifest the
# `built` health check looks for. Written aside and renamed, so a half-written file never counts.
set -eu
release=${DEPLOY_RELEASE:-$(basename "$PWD")}
# The name goes into JSON unquoted by any tool: allow only what release names are made of.
case $release in
  '' | *[!A-Za-z0-9._-]*) echo "build.sh: unexpected release name '$release'" >&2; exit 1 ;;
esac
mkdir -p public/build
printf '{"release": "%s", "built_at": "%s", "entries": {"app.css": "app.css", "app.js": "app.js"}}\n' \
  "$release" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > public/build/manifest.json.tmp
printf 'body { font-family: sans-serif; }\n' > public/build/app.css
printf 'console.log("chom %s");\n' "$release" > public/build/app.js
mv public/build/manifest.json.tmp public/build/manifest.json
echo "built public/build for release $release"
