#!/usr/bin/env bash
# Print the bin/ folder of Node 22 (the version the image ships), installing it from the npm
# registry's node-linux-<arch> package into a per-user cache when missing. Usage:
#   PATH="$(scripts/node22.sh):$PATH"
# NODE22_ARCH=arm64 gives the aarch64 build (used under qemu-user by the ARM smoke test).
# With --env it prints the shell lines that put it first on PATH and point npm_config_nodedir at it
# (better-sqlite3 and node-gyp build against that Node's headers): eval "$(scripts/node22.sh --env)".
set -eu
NODE22_VERSION=${NODE22_VERSION:-22.23.3}
arch=${NODE22_ARCH:-}
if [ -z "$arch" ]; then
    case "$(uname -m)" in
        x86_64) arch=x64 ;;
        aarch64) arch=arm64 ;;
        *) echo "node22.sh: no Node 22 package for $(uname -m)" >&2; exit 1 ;;
    esac
fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/iot-gateway/node-v$NODE22_VERSION-linux-$arch
if [ ! -x "$cache/bin/node" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent "node-linux-$arch@$NODE22_VERSION" >/dev/null)
    mkdir -p "$cache.part"
    tar -xzf "$tmp"/node-linux-"$arch"-*.tgz -C "$cache.part" --strip-components=1
    rm -rf "$cache" && mv "$cache.part" "$cache"
fi
if [ "${1:-}" = --env ]; then
    # shellcheck disable=SC2016 # $PATH is for the eval, not expanded here
    printf 'export PATH=%q:"$PATH" npm_config_nodedir=%q\n' "$cache/bin" "$cache"
else
    echo "$cache/bin"
fi
