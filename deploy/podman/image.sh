#!/usr/bin/env bash
# `make image`: build the Assay image from the Dockerfile with podman, on a machine with no
# Docker daemon and no registry access (docs/operations.md, "Build the image").
#
#   1. installs podman, buildah, runc and debootstrap with apt-get when one is missing;
#   2. makes the base image once: a Debian bookworm root filesystem (debootstrap, from this
#      machine's own apt mirror) with python3.11 and its venv, imported as $BASE_IMAGE
#      (kept in podman's store: later runs reuse it);
#   3. builds the Dockerfile with PYTHON_IMAGE=$BASE_IMAGE and tags it $IMAGE.
#
# With Docker and a registry, the same Dockerfile builds from python:3.11-slim instead:
#   docker build -t assay:dev .
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:-assay:dev}
BASE_IMAGE=${BASE_IMAGE:-localhost/assay-python:3.11-bookworm}
SUITE=bookworm
PACKAGES=python3.11,python3.11-venv,python3-distutils  # bookworm has no python3.11-distutils
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}

SUDO=()
((EUID == 0)) || SUDO=(sudo)  # apt-get and debootstrap need root

say() { printf '[image] %s\n' "$*" >&2; }

install_tools() {
    local missing=()
    for tool in podman buildah runc debootstrap; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]} (apt-get)"
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman buildah runc debootstrap
}

# The first deb822 or one-line `deb` URI of this machine's apt sources: debootstrap fetches
# from the mirror the machine already uses (no other network access needed).
apt_mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
        | grep -v security | head -n1 || true)
    [[ -n $uri ]] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

make_base_image() {
    if podman image exists "$BASE_IMAGE"; then
        say "base image $BASE_IMAGE: cached"
        return 0
    fi
    local work mirror
    work=$(mktemp -d /var/tmp/assay-rootfs.XXXXXX)
    trap '"${SUDO[@]}" rm -rf "$work"' RETURN
    mirror=$(apt_mirror)
    say "base image $BASE_IMAGE: debootstrap $SUITE from $mirror (about a minute)"
    "${SUDO[@]}" debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/rootfs" "$mirror" \
        >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; return 1; }
    "${SUDO[@]}" rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
    "${SUDO[@]}" tar -C "$work/rootfs" -c . | podman import --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
    say "base image $BASE_IMAGE: imported"
}

# pip inside the build trusts what this machine's pip trusts (a proxy's CA, say): the bundle
# is mounted for the build only and never lands in the image.
build_opts=(--network host --pull=never --build-arg "PYTHON_IMAGE=$BASE_IMAGE")
cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
if [[ -n $cert && -f $cert ]]; then
    build_opts+=(-v "$(realpath "$cert"):/run/assay-build/ca.crt:ro"
        --build-arg PIP_CERT=/run/assay-build/ca.crt)
fi

install_tools
make_base_image
say "building $IMAGE from the Dockerfile (PYTHON_IMAGE=$BASE_IMAGE)"
start=$SECONDS
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
podman build "${build_opts[@]}" -t "$IMAGE" .
say "built $IMAGE in $((SECONDS - start)) s"
# The image this build replaced, now untagged: removed, so rebuilds do not pile up.
if [[ -n $previous && $previous != $(podman image inspect --format '{{.Id}}' "$IMAGE") ]]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
fi
