SUMMARY = "better-sqlite3: SQLite for Node.js, the gateway's outbox and audit log store"
DESCRIPTION = "The better-sqlite3 native addon (with the SQLite amalgamation it embeds) compiled \
for the target against the nodejs headers, installed where the bundled gateway loads it: \
${libdir}/iot-gateway/node_modules/better-sqlite3. Compile settings are shared with \
scripts/build-sqlite-addon.sh, which cross-builds the same addon for the arm64 test under QEMU."
HOMEPAGE = "https://github.com/WiseLibs/better-sqlite3"
SECTION = "libs"

# better-sqlite3 is MIT; SQLite is public domain; node-addon-api (MIT) is header-only C++ that is
# compiled into the addon.
LICENSE = "MIT & PD"
LIC_FILES_CHKSUM = " \
    file://LICENSE;md5=daaa6378e66cac5c1de3eabc51c6020f \
    file://deps/sqlite3/sqlite3.h;beginline=1;endline=10;md5=dc2c8c620a410b7ae4b7d83d3e2e7c15 \
    file://node_modules/node-addon-api/LICENSE.md;md5=fc3ff1120869be6b3cce17f9a06bfe2e \
"

# Versions, sha256s, node-gyp arguments, extra flags and the installed files: one definition,
# also read by scripts/build-sqlite-addon.sh.
require better-sqlite3-settings.inc

# The npm fetchers are disabled in wrynose: the registry tarballs go through the plain https
# fetcher. node-addon-api is unpacked inside the package's node_modules/, where binding.gyp's
# require('node-addon-api') resolves it. No network after do_fetch.
SRC_URI = " \
    https://registry.npmjs.org/better-sqlite3/-/better-sqlite3-${BETTER_SQLITE3_VERSION}.tgz;downloadfilename=npm-better-sqlite3-${BETTER_SQLITE3_VERSION}.tgz;name=better-sqlite3;subdir=better-sqlite3;striplevel=1 \
    https://registry.npmjs.org/node-addon-api/-/node-addon-api-${NODE_ADDON_API_VERSION}.tgz;downloadfilename=npm-node-addon-api-${NODE_ADDON_API_VERSION}.tgz;name=node-addon-api;subdir=better-sqlite3/node_modules/node-addon-api;striplevel=1 \
"
SRC_URI[better-sqlite3.sha256sum] = "${BETTER_SQLITE3_SHA256}"
SRC_URI[node-addon-api.sha256sum] = "${NODE_ADDON_API_SHA256}"
S = "${UNPACKDIR}/better-sqlite3"

# nodejs-native: node to run node-gyp (the one npm bundles) and the `node ...` commands in
# binding.gyp. nodejs (target): its headers (include/node, with common.gypi and config.gypi) in
# the recipe sysroot, which node-gyp compiles against via --nodedir.
DEPENDS = "nodejs-native nodejs"
RDEPENDS:${PN} = "nodejs"

inherit python3native

python __anonymous() {
    if d.getVar('PV') != d.getVar('BETTER_SQLITE3_VERSION'):
        bb.fatal("better-sqlite3_%s.bb: better-sqlite3-settings.inc says version %s; rename the recipe "
                 "or update the settings" % (d.getVar('PV'), d.getVar('BETTER_SQLITE3_VERSION')))
}

# node-gyp's --arch; the same mapping as nodejs's recipe and npm.bbclass.
def better_sqlite3_node_arch(d):
    import re
    a = d.getVar('TARGET_ARCH')
    if re.match(r'i.86$', a): return 'ia32'
    if a == 'x86_64': return 'x64'
    if a == 'aarch64': return 'arm64'
    if re.match(r'(powerpc64|powerpc64le|ppc64le)$', a): return 'ppc64'
    if a == 'powerpc': return 'ppc'
    return a

NODE_GYP_ARCH = "${@better_sqlite3_node_arch(d)}"
NODE_GYP = "${STAGING_LIBDIR_NATIVE}/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"
NODE_GYP_NODEDIR = "${STAGING_DIR_TARGET}${prefix}"
NODE_GYP_JOBS = "${@oe.utils.parallel_make(d) or 1}"

BETTER_SQLITE3_DESTDIR = "${libdir}/iot-gateway/node_modules/better-sqlite3"

do_configure[noexec] = "1"

do_compile() {
    [ -f ${NODE_GYP} ] || bbfatal "node-gyp not found in nodejs-native's sysroot: ${NODE_GYP}"
    [ -f ${NODE_GYP_NODEDIR}/include/node/common.gypi ] || \
        bbfatal "no Node.js headers in the target sysroot: ${NODE_GYP_NODEDIR}/include/node"
    cd ${S}
    # the toolchain's flags (Yocto's TARGET_*FLAGS, --sysroot in CC/CXX) plus the shared extras;
    # node-gyp's make backend reads CC, CXX, LINK, AR, CPPFLAGS, CFLAGS, CXXFLAGS and LDFLAGS.
    export LINK="${CXX}"
    export CPPFLAGS="${CPPFLAGS} ${BETTER_SQLITE3_CPPFLAGS}"
    export CFLAGS="${CFLAGS} ${BETTER_SQLITE3_CFLAGS}"
    export CXXFLAGS="${CXXFLAGS} ${BETTER_SQLITE3_CFLAGS}"
    # -flto: the debug information is made at link time, so the link needs the prefix map too
    # (better-sqlite3-settings.inc); otherwise TMPDIR stays in DW_AT_comp_dir (buildpaths QA)
    export LDFLAGS="${LDFLAGS} ${DEBUG_PREFIX_MAP}"
    export HOME="${WORKDIR}"
    node ${NODE_GYP} ${BETTER_SQLITE3_GYP_ARGS} \
        --arch=${NODE_GYP_ARCH} \
        --nodedir=${NODE_GYP_NODEDIR} \
        --python=${PYTHON} \
        --jobs=${NODE_GYP_JOBS} \
        --devdir=${WORKDIR}/node-gyp-devdir
    [ -f build/Release/better_sqlite3.node ] || \
        bbfatal "node-gyp built no build/Release/better_sqlite3.node (is --force_build=1 in BETTER_SQLITE3_GYP_ARGS?)"
    # the buildpaths QA check would find it later, in do_package_qa; say it here, with the cause
    if grep -q -F "${TMPDIR}" build/Release/better_sqlite3.node; then
        bbfatal "build/Release/better_sqlite3.node contains the build directory ${TMPDIR}: a compile or link step missed DEBUG_PREFIX_MAP"
    fi
}

do_install() {
    for f in ${BETTER_SQLITE3_INSTALL_FILES}; do
        install -d ${D}${BETTER_SQLITE3_DESTDIR}/$(dirname $f)
        cp -R --no-preserve=ownership ${S}/$f ${D}${BETTER_SQLITE3_DESTDIR}/$f
    done
    find ${D}${BETTER_SQLITE3_DESTDIR} -type d -exec chmod 0755 {} +
    find ${D}${BETTER_SQLITE3_DESTDIR} -type f -exec chmod 0644 {} +
    chmod 0755 ${D}${BETTER_SQLITE3_DESTDIR}/build/Release/better_sqlite3.node
}

FILES:${PN} = "${BETTER_SQLITE3_DESTDIR}"
