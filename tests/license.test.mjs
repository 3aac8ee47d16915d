// The repository's LICENSE is the one the layer's own recipes declare: each LIC_FILES_CHKSUM that
// names it resolves (as BitBake would expand FILE_DIRNAME / IOT_GATEWAY_REPO_DIR) to the top-level
// file, with its md5. A changed LICENSE without the recipes following fails here, not in a build.
// Also: the units' Documentation= point to man pages, not to a web page that does not exist.
import { createHash } from 'node:crypto'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { LAYER, REPO, t } from './helpers.mjs'

function walk (dir, out = []) {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e)
    if (statSync(p).isDirectory()) walk(p, out); else out.push(p)
  }
  return out
}
const files = walk(LAYER)
const md5 = createHash('md5').update(readFileSync(join(REPO, 'LICENSE'))).digest('hex')

t.test('recipes of our own code point LIC_FILES_CHKSUM at the top-level LICENSE', async t => {
  const own = files.filter(f => /\.(bb|inc)$/.test(f) && /^LIC_FILES_CHKSUM = "file:\/\/[^"]*\/LICENSE;/m.test(readFileSync(f, 'utf8')))
  const names = own.map(f => relative(LAYER, f)).sort()
  for (const need of ['recipes-gateway/iot-gateway/iot-gateway.inc', 'recipes-gateway/iot-gateway-certs/iot-gateway-certs_1.0.bb',
    'recipes-core/iot-gateway-ssh/iot-gateway-ssh_1.0.bb', 'recipes-core/iot-gateway-system-conf/iot-gateway-system-conf_1.0.bb']) {
    t.ok(names.includes(need), `${need} declares the repository's LICENSE`)
  }
  for (const f of own) {
    const m = /^LIC_FILES_CHKSUM = "file:\/\/([^;"]+);md5=([0-9a-f]{32})"/m.exec(readFileSync(f, 'utf8'))
    t.ok(m, `${relative(LAYER, f)}: one file and its md5`)
    if (!m) continue
    // FILE_DIRNAME is the folder of the .bb that includes the file (an .inc sits beside its .bb);
    // IOT_GATEWAY_REPO_DIR defaults to three levels above it (the recipe says so).
    const fileDirname = dirname(f)
    const path = m[1].replace('${FILE_DIRNAME}', fileDirname).replace('${IOT_GATEWAY_REPO_DIR}', resolve(fileDirname, '..', '..', '..'))
    t.notMatch(path, /\$\{/, `${relative(LAYER, f)}: no variable left unexpanded in ${m[1]}`)
    t.equal(resolve(path), join(REPO, 'LICENSE'), `${relative(LAYER, f)}: the path is the repository's LICENSE`)
    t.equal(m[2], md5, `${relative(LAYER, f)}: md5 of LICENSE`)
  }
  t.match(readFileSync(join(REPO, 'LICENSE'), 'utf8'), /^MIT License\n/, 'MIT, as app/package.json says')
  t.equal(JSON.parse(readFileSync(join(REPO, 'app', 'package.json'), 'utf8')).license, 'MIT')
})

t.test('Documentation= of the units names man pages only', async t => {
  const units = files.filter(f => /\.(service|timer|path|socket)$/.test(f))
  t.ok(units.length >= 8, 'the units are found')
  for (const f of units) {
    for (const line of readFileSync(f, 'utf8').split('\n').filter(l => l.startsWith('Documentation='))) {
      for (const uri of line.slice('Documentation='.length).split(/\s+/).filter(Boolean)) {
        t.match(uri, /^man:[a-z0-9@._-]+\([1-8]\)$/, `${relative(LAYER, f)}: ${uri}`)
      }
    }
  }
})
