#!/usr/bin/env bash
# Builds the images of docker-compose.yml without pulling anything:
#   shoal:latest             FROM scratch + the statically linked `shoal`
#   shoal-prometheus:latest  FROM scratch + Debian's prometheus (with --prometheus)
#
# The binary: cargo build --release for x86_64-unknown-linux-gnu with a
# statically linked C runtime (glibc's static libc; its built-in "files" and
# "dns" name services resolve compose's service names with no shared
# library). The target is named explicitly so that RUSTFLAGS do not reach
# build scripts and proc-macros, which cannot be static. The build goes to
# its own target directory (SHOAL_STATIC_TARGET_DIR, default target-static)
# so that it neither waits for nor invalidates the debug build of
# `cargo test`; a second run only checks that it is up to date.
#
# Usage: deploy/docker/build-images.sh [--prometheus] [--tag TAG]
set -euo pipefail
cd "$(dirname "$0")/../.."

tag=latest
prometheus=false
while [ $# -gt 0 ]; do
    case "$1" in
        --prometheus) prometheus=true ;;
        --tag) tag="$2"; shift ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "build-images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

triple=x86_64-unknown-linux-gnu
target_dir=${SHOAL_STATIC_TARGET_DIR:-target-static}
stage=target-docker
started=$(date +%s)

echo "== shoal: static release build ($triple, target dir $target_dir)"
# A fixed environment: build scripts (ring's, through cc) rerun when
# variables they watch change, and `cargo test` (which runs this script from
# tests/docker_compose.rs) sets others than a shell does; with the same
# environment from everywhere, a second run finds the build up to date.
env -i PATH="$PATH" HOME="$HOME" \
    ${CARGO_HOME:+CARGO_HOME="$CARGO_HOME"} ${RUSTUP_HOME:+RUSTUP_HOME="$RUSTUP_HOME"} \
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
    cargo build --release --locked --target "$triple" --bin shoal
binary="$target_dir/$triple/release/shoal"
if ldd "$binary" 2>&1 | grep -q '=>'; then
    echo "build-images.sh: $binary is not statically linked:" >&2
    ldd "$binary" >&2
    exit 1
fi

rootfs="$stage/shoal-rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs/data" "$rootfs/shared" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
cp "$binary" "$rootfs/shoal"
# Roots for object storage over https (reqwest's rustls verifier reads the
# system's bundle; QUIC needs none, it pins the coordinator's certificate).
bundle=/etc/ssl/certs/ca-certificates.crt
if [ -f "$bundle" ]; then
    mkdir -p "$rootfs/etc/ssl/certs"
    cp -L "$bundle" "$rootfs$bundle"
else
    echo "note: no $bundle here (Debian's ca-certificates): the image gets no CA roots," \
        "so object storage over https will fail unless SSL_CERT_FILE names a mounted bundle"
fi
echo "== image shoal:$tag"
docker build --quiet --tag "shoal:$tag" --file deploy/docker/Dockerfile . >/dev/null

if $prometheus; then
    source=/usr/bin/prometheus
    if [ ! -x "$source" ]; then
        echo "build-images.sh: $source is missing: apt-get install prometheus (Debian's package)" >&2
        exit 1
    fi
    rootfs="$stage/prometheus-rootfs"
    rm -rf "$rootfs"
    mkdir -p "$rootfs/usr/bin" "$rootfs/usr/share" "$rootfs/prometheus" "$rootfs/etc/prometheus" "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp"
    cp "$source" "$rootfs/usr/bin/prometheus"
    # The shared libraries it names (glibc's libc and loader), at the paths
    # the binary asks for; none if it is static.
    for library in $(ldd "$source" 2>/dev/null | grep -o '/[^ ]*' || true); do
        mkdir -p "$rootfs$(dirname "$library")"
        cp -L "$library" "$rootfs$library"
    done
    cp -r /usr/share/prometheus "$rootfs/usr/share/"
    echo "== image shoal-prometheus:$tag"
    docker build --quiet --tag "shoal-prometheus:$tag" --file deploy/docker/prometheus.Dockerfile . >/dev/null
fi

echo "== images built in $(($(date +%s) - started)) s:"
docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' |
    grep -E "^shoal(-prometheus)?:$tag " | sed 's/^/   /' || true
