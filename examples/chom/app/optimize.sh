#!/bin/sh
# Before the switch: stands in for `php artisan config:cache route:cache view:cache`, writing
# bootstrap/cache/config.json. Unlike Laravel's config cache it holds no setting from .env, so
# no secret is copied into the release directory.
set -eu
release=${DEPLOY_RELEASE:-$(basename "$PWD")}
case $release in
  '' | *[!A-Za-z0-9._-]*) echo "optimize.sh: unexpected release name '$release'" >&2; exit 1 ;;
esac
mkdir -p bootstrap/cache
printf '{"release": "%s", "cached_at": "%s", "routes": ["/", "/health"]}\n' \
  "$release" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > bootstrap/cache/config.json.tmp
mv bootstrap/cache/config.json.tmp bootstrap/cache/config.json
echo "cached config and routes for release $release"
