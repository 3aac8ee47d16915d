# Version and SOURCE_DATE_EPOCH of the gateway recipe, from the git history of app/.
#
# The recipe takes its TypeScript sources as plain files from the checkout (file://app/...), so
# OE's own SOURCE_DATE_EPOCH rule sees no git repository and takes the newest file time: the time
# the builder happened to clone, different on every machine. This takes them from git instead,
# the same for every clone of a commit; without git (an exported tree) from stated values.
# No BitBake import: tests/reproducible.test.mjs runs this same code on two clones.
import functools
import json
import os
import subprocess


def _git(repo_dir, *args):
    try:
        r = subprocess.run(['git', '-C', repo_dir] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, universal_newlines=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


@functools.lru_cache(maxsize=16)
def describe(repo_dir, stated_epoch='', stated_commit=''):
    """'key=value;...' with pv, epoch, commit, error (empty when fine). Cached: inline python in a
    recipe is evaluated at every expansion, and git must not run hundreds of times per parse."""
    info = {'pv': '', 'epoch': '', 'commit': '', 'error': ''}
    try:
        with open(os.path.join(repo_dir, 'app', 'package.json'), encoding='utf-8') as f:
            version = json.load(f)['version']
    except (OSError, ValueError, KeyError) as e:
        info['error'] = 'cannot read the version from %s/app/package.json: %s' % (repo_dir, e)
        return _join(info)
    commit, epoch, dirty = stated_commit or '', stated_epoch or '', False
    if not (commit and epoch):
        out = _git(repo_dir, 'log', '-1', '--format=%H %ct', '--', 'app')
        if out and len(out.split()) == 2:
            git_commit, git_epoch = out.split()
            commit, epoch = commit or git_commit, epoch or git_epoch
            dirty = bool(_git(repo_dir, 'status', '--porcelain', '--untracked-files=no', '--', 'app'))
    info['pv'] = version     # also when the recipe is skipped below: PV must never be empty
    if not epoch.isdigit():
        info['error'] = ('%s is not a git checkout with a commit of app/: state the sources\' date as '
                         'IOT_GATEWAY_SOURCE_DATE_EPOCH (seconds since 1970) and their revision as '
                         'IOT_GATEWAY_SOURCE_COMMIT' % repo_dir)
        return _join(info)
    info['epoch'] = epoch
    info['commit'] = commit
    pv = version
    if commit:
        pv += '+git' + commit[:12]
    if dirty:
        pv += '+dirty'
    info['pv'] = pv
    return _join(info)


def state_files(repo_dir):
    """The files of git's state that a new commit, checkout or `git add` changes. BitBake keeps a
    recipe's parsed variables in its cache until one of the recipe's files changes; the recipe
    marks these as dependencies (bb.parse.mark_dependency), so PV and SOURCE_DATE_EPOCH follow
    the repository instead of staying at what the first parse saw."""
    gitdir = _git(repo_dir, 'rev-parse', '--absolute-git-dir')
    if not gitdir:
        return []
    common = _git(repo_dir, 'rev-parse', '--git-common-dir') or gitdir
    if not os.path.isabs(common):
        common = os.path.normpath(os.path.join(repo_dir, common))
    files = [os.path.join(gitdir, 'HEAD'), os.path.join(gitdir, 'index'), os.path.join(common, 'packed-refs')]
    ref = _git(repo_dir, 'symbolic-ref', '-q', 'HEAD')
    if ref:
        files.append(os.path.join(common, ref))
    return [f for f in files if os.path.exists(f)]


def _join(info):
    return ';'.join('%s=%s' % (k, v.replace(';', ',')) for k, v in info.items())


def field(described, name):
    """One field of describe()'s string."""
    for part in (described or '').split(';'):
        k, _, v = part.partition('=')
        if k == name:
            return v
    return ''
