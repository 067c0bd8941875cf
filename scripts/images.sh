#!/usr/bin/env bash
# make images: build the tpa-gis image where no registry serves base images, and run it as docker-compose.yml
# does (migrate once, API, job worker), with host networking only, against a database of this machine's
# PostgreSQL. Checks: the image's size, the API's health check, the demo through the API, a job run by the worker
# container, and a clean stop. Not part of make test (it needs Docker and Debian's mirror). docs/operations.md
#
#   scripts/images.sh               BASE=…, DB=…, PORT=… override the defaults below
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${BASE:-tpa-gis/python:bookworm}       # the FROM image, made here from Debian if absent
IMAGE=${IMAGE:-tpa-gis:latest}
PG=${PG:-postgresql://postgres@127.0.0.1:5432}
DB=${DB:-tpa_images}
PORT=${PORT:-8765}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
say() { printf '[images] %s\n' "$*"; }

command -v docker >/dev/null || { echo "docker is not installed (Debian: apt-get install -y docker.io)"; exit 1; }
docker info >/dev/null 2>&1 || { echo "the Docker daemon is not running (dockerd)"; exit 1; }

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install -y debootstrap)"; exit 1; }
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  say "making the base image $BASE from Debian bookworm (debootstrap, minbase + Python 3.11)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$MIRROR" \
    >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # the base trusts what this machine trusts (an intranet's TLS proxy has its own authority): pip reads PIP_CERT
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  tar -C "$root" -c . | docker import --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' - "$BASE" >/dev/null
  rm -rf "$root"
  trap - EXIT
fi

say "building $IMAGE"
start=$(date +%s)
docker build --network host --build-arg PYTHON_IMAGE="$BASE" -t "$IMAGE" . >/tmp/tpa-images-build.log 2>&1 \
  || { tail -40 /tmp/tpa-images-build.log; exit 1; }
size=$(docker image inspect "$IMAGE" --format '{{.Size}}')
say "built in $(( $(date +%s) - start )) s; image size $(( size / 1000000 )) MB"

secrets="-e TPA_JITTER_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
secrets="$secrets -e TPA_PSEUDONYM_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
url="$PG/$DB"
psql -X -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
cleanup() { docker rm -f tpa-images-api tpa-images-worker >/dev/null 2>&1 || true
            psql -X -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; }
trap cleanup EXIT

say "migrate (the compose file's one-off service): schema and demo region"
start=$(date +%s)
# shellcheck disable=SC2086
docker run --rm --network host -e DATABASE_URL="$url" $secrets "$IMAGE" \
  sh -c "tpa db upgrade --wait 60 && exec tpa demo load --if-empty" >/tmp/tpa-images-migrate.log 2>&1 \
  || { tail -30 /tmp/tpa-images-migrate.log; exit 1; }
say "migrated and loaded in $(( $(date +%s) - start )) s"

# shellcheck disable=SC2086
docker run -d --name tpa-images-api --network host -e DATABASE_URL="$url" -e PORT="$PORT" \
  -e TPA_PROCESSES_WORKER=false --health-interval 2s $secrets "$IMAGE" >/dev/null
# shellcheck disable=SC2086
docker run -d --name tpa-images-worker --network host -e DATABASE_URL="$url" $secrets "$IMAGE" tpa worker >/dev/null
for _ in $(seq 90); do
  [ "$(docker inspect -f '{{.State.Health.Status}}' tpa-images-api)" = healthy ] && break
  sleep 1
done
[ "$(docker inspect -f '{{.State.Health.Status}}' tpa-images-api)" = healthy ] \
  || { docker logs tpa-images-api | tail -30; echo "the API did not become healthy"; exit 1; }
say "API healthy (its HEALTHCHECK, on PORT=$PORT)"

n=$(curl -sf "http://127.0.0.1:$PORT/collections/villages/items?limit=1" | python3 -c \
    'import json, sys; print(json.load(sys.stdin)["numberMatched"])')
say "demo through the API: $n villages"
[ "$n" -gt 0 ]

job=$(curl -sf -X POST -H 'Prefer: respond-async' -H 'Content-Type: application/json' \
  -d '{"inputs": {"features": {"href": "/collections/villages/items"}, "variable": "population", "permutations": 99}}' \
  "http://127.0.0.1:$PORT/processes/hotspots/execution" | python3 -c 'import json, sys; print(json.load(sys.stdin)["jobID"])')
status=accepted
for _ in $(seq 120); do
  status=$(curl -sf "http://127.0.0.1:$PORT/jobs/$job" | python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])')
  case $status in successful|failed) break ;; esac
  sleep 1
done
say "a job run by the worker container: $status"
[ "$status" = successful ]

for c in tpa-images-api tpa-images-worker; do
  start=$(date +%s%N)
  docker stop -t 10 "$c" >/dev/null
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
  say "docker stop $c: exit code $code after $ms ms"
  [ "$code" -ne 137 ] || { echo "$c was killed, not stopped (SIGTERM not handled by PID 1)"; exit 1; }
done
say "done: image $IMAGE ($(( size / 1000000 )) MB)"
