#!/usr/bin/env python3
"""Install the layer's recipes into a root file system the way BitBake would, for the stand-in.

Usage: standin-layer.py LAYER REPO ROOT [VAR=VALUE ...]
       standin-layer.py wks LAYER [VAR=VALUE ...]   (the disk layout, see wks())

Reads the image recipe (recipes-core/images/*.bb), takes every package of its IMAGE_INSTALL (and
their RDEPENDS, recursively) that a recipe of THIS layer builds, and for each of those recipes runs
its own do_install (with its :append parts and its python pre/post functions) into a staging
folder, with the files of its SRC_URI unpacked from the layer, exactly as the recipe lists them.
bbappends of recipes the layer does not own (mosquitto) run their do_install:append the same way:
the base package comes from Debian. VAR=VALUE are the knobs (what local.conf or kas would set).

Not run: do_fetch of remote URLs and do_compile. The gateway's bundle comes from the repository's
own build (app/dist, `npm run build`: the same esbuild call as the recipe's do_compile) and the
better-sqlite3 recipe is skipped (scripts/build-sqlite-addon.sh cross-builds it). So a new recipe,
unit or drop-in of the layer reaches the stand-in without editing this script.

Prints JSON on stdout: {"recipes": [...], "enable": [units], "users": [...], "groups": [...]}.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

OVERRIDES = ['iot-gateway-os', 'qemuall', 'qemuarm64', 'aarch64', 'arm64', 'class-target', 'linux']
# Debian 12 is merged-/usr: the paths of oe-core's usrmerge distro feature.
PATHS = {
    'prefix': '/usr', 'exec_prefix': '/usr', 'base_prefix': '', 'bindir': '/usr/bin',
    'sbindir': '/usr/sbin', 'libdir': '/usr/lib', 'libexecdir': '/usr/libexec',
    'nonarch_libdir': '/usr/lib', 'base_libdir': '/usr/lib', 'nonarch_base_libdir': '/usr/lib',
    'base_bindir': '/usr/bin', 'base_sbindir': '/usr/sbin', 'sysconfdir': '/etc',
    'localstatedir': '/var', 'datadir': '/usr/share', 'systemd_unitdir': '/usr/lib/systemd',
    'systemd_system_unitdir': '/usr/lib/systemd/system', 'ROOT_HOME': '/root',
    'COMMON_LICENSE_DIR': '/nonexistent', 'MACHINE': 'qemuarm64', 'DISTRO': 'iot-gateway-os',
    'TARGET_ARCH': 'aarch64', 'TOPDIR': os.getcwd(),
}


class Fatal(Exception):
    pass


class BB:
    """The part of BitBake's `bb` module that recipes' python functions call."""
    @staticmethod
    def fatal(msg):
        raise Fatal(msg)

    @staticmethod
    def warn(msg):
        print('WARNING: %s' % msg, file=sys.stderr)

    @staticmethod
    def note(msg):
        print('NOTE: %s' % msg, file=sys.stderr)

    @staticmethod
    def error(msg):
        print('ERROR: %s' % msg, file=sys.stderr)


class Data:
    """A recipe's variables: assignments in file order, then overrides, expanded on read."""

    def __init__(self, knobs):
        self.ops = []          # (name, op, value)
        self.funcs = {}        # name -> [(kind, body)]  kind: sh | python
        self.flags = {}        # (name, flag) -> [values]
        self.knobs = knobs
        self.fixed = dict(PATHS)
        # What `${@...}` and python functions see: BitBake's names, the recipes' own top-level
        # `def`s, and the layer's python library (layer.conf: addpylib ${LAYERDIR}/lib iotgw).
        self.pyglobals = {'d': self, 'bb': BB, 'os': os, 'oe': None}

    # --- parsing ---
    def parse(self, path, layer):
        if 'iotgw' not in self.pyglobals and os.path.isdir(os.path.join(layer, 'lib', 'iotgw')):
            sys.path.insert(0, os.path.join(layer, 'lib'))
            import importlib
            self.pyglobals['iotgw'] = importlib.import_module('iotgw')
            for mod in sorted(os.listdir(os.path.join(layer, 'lib', 'iotgw'))):
                if mod.endswith('.py') and mod != '__init__.py':
                    importlib.import_module('iotgw.' + mod[:-3])
        with open(path) as f:
            lines = f.read().split('\n')
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            s = line.strip()
            if not s or s.startswith('#'):
                continue
            if re.match(r'^def\s+\w+\s*\(', line):
                body = [line]
                while i < len(lines) and (lines[i].startswith((' ', '\t')) or not lines[i].strip()):
                    body.append(lines[i])
                    i += 1
                exec(compile('\n'.join(body) + '\n', path, 'exec'), self.pyglobals)
                continue
            m = re.match(r'^(python\s+)?([\w:${}.-]+)\s*\(\)\s*\{\s*$', s)
            if m:
                body = []
                while i < len(lines) and not re.match(r'^\}\s*$', lines[i]):
                    body.append(lines[i])
                    i += 1
                i += 1
                self.funcs.setdefault(m.group(2), []).append(('python' if m.group(1) else 'sh', '\n'.join(body)))
                continue
            while s.endswith('\\') and i < len(lines):
                s = s[:-1] + ' ' + lines[i].strip()
                i += 1
            m = re.match(r'^(require|include)\s+(\S+)$', s)
            if m:
                name = self.expand(m.group(2))
                for base in (os.path.dirname(path), layer):
                    p = os.path.join(base, name)
                    if os.path.exists(p):
                        self.parse(p, layer)
                        break
                else:
                    if m.group(1) == 'require':
                        raise Fatal('%s: cannot find %s' % (path, name))
                continue
            if re.match(r'^(inherit|addtask|deltask|EXPORT_FUNCTIONS|export)\b', s):
                continue
            m = re.match(r'^([\w:${}.\-/]+)(\[([\w-]+)\])?\s*(\?\?=|\?=|:=|\+=|=\+|\.=|=\.|=)\s*(.*)$', s)
            if not m:
                continue
            name, flag, op, value = m.group(1), m.group(3), m.group(4), m.group(5).strip()
            if value[:1] in ('"', "'") and value[-1:] == value[:1]:
                value = value[1:-1]
            name = name.replace('${PN}', self.fixed.get('PN', ''))
            if flag:
                self.flags.setdefault((name, flag), []).append((op, value))
                continue
            if op == ':=':
                value = self.expand(value)
                op = '='
            self.ops.append((name, op, value))

    # --- reading ---
    def _raw(self, name):
        if name in self.knobs:
            return self.knobs[name]
        val = None
        weak = None
        for n, op, v in self.ops:
            if n != name:
                continue
            if op == '=':
                val = v
            elif op == '?=':
                if val is None:
                    val = v
            elif op == '??=':
                weak = v
            elif op == '+=':
                val = (val or '') + ' ' + v
            elif op == '=+':
                val = v + ' ' + (val or '')
            elif op == '.=':
                val = (val or '') + v
            elif op == '=.':
                val = v + (val or '')
        if val is None:
            val = weak
        if val is None:
            val = self.fixed.get(name)
        # overrides: NAME:append:<ovr>, NAME:prepend, NAME:remove, NAME:<ovr>
        active = OVERRIDES + ['pn-' + self.fixed.get('PN', '')]
        pn = self.fixed.get('PN', '')
        for n, op, v in self.ops:
            if not n.startswith(name + ':'):
                continue
            parts = self.expand(n).split(':')[1:]
            parts = [pn if p == '${PN}' else p for p in parts]
            kinds = [p for p in parts if p in ('append', 'prepend', 'remove')]
            conds = [p for p in parts if p not in ('append', 'prepend', 'remove')]
            if any(c not in active and c != pn for c in conds):
                continue
            if not kinds:
                if conds and (conds[0] == pn or conds[0] in active):
                    val = v
                continue
            if kinds[0] == 'append':
                val = (val or '') + v
            elif kinds[0] == 'prepend':
                val = v + (val or '')
            elif kinds[0] == 'remove':
                rm = set(self.expand(v).split())
                val = ' '.join(w for w in self.expand(val or '').split() if w not in rm)
        return val

    def getVar(self, name, expand=True):
        v = self._raw(name)
        if v is None:
            return None
        return self.expand(v) if expand else v

    def setVar(self, name, value):
        self.knobs[name] = value

    def expand(self, s, depth=0):
        if s is None or depth > 20:
            return s
        out = []
        i = 0
        while i < len(s):
            if s.startswith('${@', i):
                j, lvl = i + 3, 1
                while j < len(s) and lvl:
                    lvl += {'{': 1, '}': -1}.get(s[j], 0)
                    j += 1
                expr = s[i + 3:j - 1]
                r = eval(expr, self.pyglobals)
                out.append('' if r is None else str(r))
                i = j
                continue
            m = re.match(r'\$\{([\w:.-]+)\}', s[i:])
            if m:
                v = self.getVar(m.group(1))
                out.append(m.group(0) if v is None else v)
                i += len(m.group(0))
                continue
            out.append(s[i])
            i += 1
        r = ''.join(out)
        return r if r == s else self.expand(r, depth + 1)

    def func(self, name):
        """The parts of a task: the base body, then :prepend/:append bodies for active overrides."""
        base, pre, post = [], [], []
        pn = self.fixed.get('PN', '')
        for key, bodies in self.funcs.items():
            parts = key.split(':')
            if parts[0] != name:
                continue
            conds = [p for p in parts[1:] if p not in ('append', 'prepend')]
            if any(c not in OVERRIDES and c != pn for c in conds):
                continue
            target = post if 'append' in parts else pre if 'prepend' in parts else base
            target.extend(bodies)
        return pre + base + post

    def flag_list(self, name, flag):
        vals = []
        for op, v in self.flags.get((name, flag), []):
            if op in ('=', ':='):
                vals = [v]
            else:
                vals.append(v)
        return self.expand(' '.join(vals)).split()


def recipe_files(layer):
    out = {}
    for root, _, files in os.walk(layer):
        for f in files:
            if f.endswith('.bb') or f.endswith('.bbappend'):
                pn = f.split('_')[0].rsplit('.', 1)[0]
                out.setdefault(pn, []).append(os.path.join(root, f))
    return out


def load(pn, paths, layer, knobs):
    d = Data(dict(knobs))
    d.fixed['PN'] = pn
    bb_files = [p for p in paths if p.endswith('.bb')]
    pv = bb_files[0].rsplit('_', 1)[1][:-3] if bb_files and '_' in os.path.basename(bb_files[0]) else '1.0'
    d.fixed.update({'PV': pv, 'BP': '%s-%s' % (pn, pv), 'FILE_DIRNAME': os.path.dirname(paths[0])})
    d.fixed['APPEND_ONLY'] = '' if bb_files else '1'
    for p in bb_files + [p for p in paths if p.endswith('.bbappend')]:
        d.fixed['THISDIR'] = os.path.dirname(p)
        d.fixed['FILE_DIRNAME'] = os.path.dirname(p)
        d.parse(p, layer)
        # FILESEXTRAPATHS with := is expanded at parse time, relative to the file that set it
    d.fixed['FILE_DIRNAME'] = os.path.dirname(bb_files[0] if bb_files else paths[0])
    d.fixed['THISDIR'] = d.fixed['FILE_DIRNAME']
    return d


def fetch_local(d, unpackdir):
    """Copy every file:// entry of SRC_URI from FILESPATH into UNPACKDIR (what do_unpack does)."""
    here = d.fixed['FILE_DIRNAME']
    extra = [p for p in (d.getVar('FILESEXTRAPATHS') or '').split(':') if p.strip() and p.strip() != '__default']
    search = [p.strip() for p in extra]
    search += [os.path.join(here, d.fixed['BP']), os.path.join(here, d.fixed['PN']), os.path.join(here, 'files')]
    for uri in (d.getVar('SRC_URI') or '').split():
        if not uri.startswith('file://'):
            continue
        name = uri[len('file://'):].split(';')[0]
        for base in search:
            src = os.path.join(base, name)
            if os.path.exists(src):
                dst = os.path.join(unpackdir, name)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                if os.path.isdir(src):
                    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
                else:
                    shutil.copy2(src, dst)
                break
        else:
            raise Fatal('%s: %s not found in %s' % (d.fixed['PN'], uri, search))


def run_python(d, name, body):
    code = 'def %s(d):\n%s\n%s(d)\n' % (name, '\n'.join('    ' + l if l.strip() else '' for l in
                                                      body.replace('\t', '    ').split('\n')), name)
    exec(compile(code, name, 'exec'), {**d.pyglobals, '__name__': name})


def install(d, repo, dest):
    pn = d.fixed['PN']
    work = tempfile.mkdtemp(prefix='standin-%s-' % pn)
    try:
        unpack = os.path.join(work, 'sources')
        os.makedirs(unpack)
        image = os.path.join(work, 'image')
        os.makedirs(image)
        d.fixed.update({'WORKDIR': work, 'UNPACKDIR': unpack, 'D': image, 'B': unpack})
        fetch_local(d, unpack)
        if d.fixed.get('APPEND_ONLY'):
            # the base package (Debian's) made its folders in /etc; its do_install:append expects them
            for top, dirs, _ in os.walk(os.path.join(dest, 'etc')):
                for x in dirs:
                    if os.path.islink(os.path.join(top, x)):
                        continue
                    os.makedirs(os.path.join(image, os.path.relpath(os.path.join(top, x), dest)), exist_ok=True)
        s = d.getVar('S') or unpack
        os.makedirs(s, exist_ok=True)
        d.fixed['S'] = s
        d.fixed['B'] = d.getVar('B') or s
        # do_compile is not run (see the header): its output is the repository's own build
        if os.path.basename(s) == 'app' and os.path.isdir(os.path.join(repo, 'app', 'dist')):
            shutil.copytree(os.path.join(repo, 'app', 'dist'), os.path.join(s, 'dist'), dirs_exist_ok=True)
        # tasks a recipe adds before do_install that only check knobs (python)
        for fname, parts in d.funcs.items():
            if fname.startswith('do_check') and parts and parts[0][0] == 'python':
                run_python(d, fname.replace('-', '_'), parts[0][1])
        for fname in d.flag_list('do_install', 'prefuncs'):
            for kind, body in d.funcs.get(fname, []):
                if kind == 'python':
                    run_python(d, fname, body)
        bodies = d.func('do_install')
        if bodies:
            script = 'set -e\nbbfatal() { echo "ERROR: $*" >&2; exit 1; }\nbbwarn() { echo "WARNING: $*" >&2; }\n' \
                     'bbnote() { :; }\ncd %s\n' % s
            for kind, body in bodies:
                script += d.expand(body) + '\n'
            r = subprocess.run(['bash', '-c', script], cwd=s)
            if r.returncode:
                raise Fatal('%s: do_install failed (%d)' % (pn, r.returncode))
        for fname in d.flag_list('do_install', 'postfuncs'):
            for kind, body in d.funcs.get(fname, []):
                if kind == 'python':
                    run_python(d, fname, body)
        subprocess.run(['cp', '-a', '--no-preserve=ownership', image + '/.', dest], check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def wks(layer, knobs):
    """The QEMU disk layout of the image: one line per partition of its wks file
    (mountpoint or -, label, fstype, size in MiB, fstab options or -, source or -)."""
    recipes = recipe_files(layer)
    images = [p for ps in recipes.values() for p in ps if '/images/' in p]
    img = load(os.path.basename(images[0]).split('.')[0], images, layer, knobs)
    name = img.getVar('WKS_FILE:qemuall') or img.getVar('WKS_FILE')
    path = os.path.join(layer, 'files', 'wic', name)
    for line in open(path):
        line = line.split('#')[0].strip()
        if not line.startswith('part '):
            continue
        words = img.expand(line).split()

        def opt(flag, default='-'):
            # wic takes both `--flag value` and `--flag=value`
            for i, w in enumerate(words):
                if w == flag and i + 1 < len(words):
                    return words[i + 1].strip('"')
                if w.startswith(flag + '='):
                    return w.split('=', 1)[1].strip('"')
            return default
        mnt = words[1] if not words[1].startswith('--') else '-'
        size = opt('--fixed-size', opt('--size', '0'))
        mib = int(re.match(r'(\d+)', size).group(1)) * (1024 if size.upper().endswith('G') else 1)
        fsopts = re.search(r'--fsoptions\s+"([^"]*)"', img.expand(line))
        print(mnt, opt('--label'), opt('--fstype', 'ext4'), mib, fsopts.group(1) if fsopts else '-',
              opt('--source'), opt('--fspassno', '0'))


def main():
    if sys.argv[1] == 'wks':
        wks(sys.argv[2], dict(a.split('=', 1) for a in sys.argv[3:]))
        return
    layer, repo, dest = sys.argv[1:4]
    knobs = dict(a.split('=', 1) for a in sys.argv[4:])
    recipes = recipe_files(layer)
    images = [p for pn, ps in recipes.items() for p in ps if '/images/' in p]
    img = load(os.path.basename(images[0]).split('.')[0], images, layer, knobs)
    want = (img.getVar('IMAGE_INSTALL') or '').split()
    # IMAGE_FEATURES etc. do not matter here; the packages do
    done, order, enable, users, groups, members = set(), [], [], [], [], []
    while want:
        pkg = want.pop(0)
        if pkg in done:
            continue
        done.add(pkg)
        if pkg not in recipes or any('/images/' in p for p in recipes[pkg]):
            continue
        if pkg == 'better-sqlite3':
            continue  # cross-built by scripts/build-sqlite-addon.sh
        d = load(pkg, recipes[pkg], layer, knobs)
        order.append((pkg, d))
        want += (d.getVar('RDEPENDS:' + pkg) or d.getVar('RDEPENDS:${PN}') or '').split()
    for pkg, d in order:
        install(d, repo, dest)
        if (d.getVar('SYSTEMD_AUTO_ENABLE:' + pkg) or d.getVar('SYSTEMD_AUTO_ENABLE') or 'enable') == 'enable':
            enable += (d.getVar('SYSTEMD_SERVICE:' + pkg) or '').split()
        for p in (d.getVar('USERADD_PARAM:' + pkg) or '').split(';'):
            if p.strip():
                users.append(p.split()[-1])
                m = re.search(r'--groups\s+(\S+)', p)
                groups += m.group(1).split(',') if m else []
                members += [[p.split()[-1], g] for g in (m.group(1).split(',') if m else [])]
                if '--user-group' in p or '-U' in p.split():
                    groups.append(p.split()[-1])
        for p in (d.getVar('GROUPADD_PARAM:' + pkg) or '').split(';'):
            if p.strip():
                groups.append(p.split()[-1])
    json.dump({'recipes': [p for p, _ in order], 'enable': enable, 'users': users,
               'groups': sorted(set(groups)), 'members': members}, sys.stdout)
    print()


if __name__ == '__main__':
    try:
        main()
    except Fatal as e:
        print('standin-layer: %s' % e, file=sys.stderr)
        sys.exit(1)
