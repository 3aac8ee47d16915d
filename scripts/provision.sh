#!/bin/sh
# provision.sh - per-gateway provisioning files for one image flashed onto many cards.
#
# Usage:
#   scripts/provision.sh make CSV OUTDIR    one OUTDIR/<id>.json per CSV line, WireGuard key pairs,
#                                           and OUTDIR/hub-peers.conf for the operator's hub
#   scripts/provision.sh write TARGET FILE  copy FILE onto the boot (FAT) partition of TARGET (a card
#                                           or an image file) as iot-gateway-provision.json, with
#                                           mtools, without mounting anything (flash.sh --provision)
#
# CSV (a header line, then one gateway a line; empty fields are left out):
#   id,wg_address,uplink_url,token,wifi_ssid,wifi_passphrase,wifi_country,ssh_keys_file,pki_backup,pki_passphrase_file
# Options of make (environment): HUB_ENDPOINT (host:port the gateways dial), HUB_PUBLIC_KEY (the
# hub's key), HUB_ALLOWED_IPS (what the gateways route to the hub; default: the hub's /24).
# The files hold secrets (token, WireGuard private key, Wi-Fi passphrase): OUTDIR is made 0700.
set -eu
NAME=iot-gateway-provision.json
die() { echo "provision.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }

# The byte offset of the boot partition: the first FAT partition of an MBR (type b, c or e) or GPT
# (Microsoft basic data) table, else the first partition (wic puts boot first).
boot_offset() {
    command -v sfdisk >/dev/null 2>&1 || die "sfdisk is not installed (Debian/Ubuntu: apt install fdisk)"
    dump=$(sfdisk --dump "$1" 2>/dev/null) || die "$1: no partition table (is it the image?)"
    ss=$(printf '%s\n' "$dump" | sed -n 's/^sector-size: *\([0-9]*\).*/\1/p'); ss=${ss:-512}
    line=$(printf '%s\n' "$dump" | grep -E 'type=(b|c|e|EBD0A0A2-B9E5-4433-87C0-68B6B72699C7)(,|$)' | head -n 1)
    [ -n "$line" ] || line=$(printf '%s\n' "$dump" | grep 'start=' | head -n 1)
    start=$(printf '%s\n' "$line" | sed -n 's/.*start= *\([0-9]*\).*/\1/p')
    [ -n "$start" ] || die "$1: no boot partition found"
    echo $((start * ss))
}

write() {
    target=$1 file=$2
    [ -e "$target" ] || die "$target: no such card or image"
    [ -f "$file" ] || die "$file: no such provisioning file"
    command -v mcopy >/dev/null 2>&1 || die "mcopy is not installed (Debian/Ubuntu: apt install mtools)"
    off=$(boot_offset "$target")
    # -o: a card flashed again gets the new file; MTOOLS_SKIP_CHECK: wic's FAT geometry is fine
    MTOOLS_SKIP_CHECK=1 mcopy -o -i "$target@@$off" "$file" "::$NAME" || die "could not write $NAME onto $target"
    sync
    echo "provisioning: $file -> $target (boot partition at byte $off) as $NAME"
}

# make: python3 writes the JSON (its escaping, not the shell's); wg makes the keys.
make() {
    csv=$1 out=$2
    [ -f "$csv" ] || die "$csv: no such CSV file"
    command -v wg >/dev/null 2>&1 || die "wg is not installed (Debian/Ubuntu: apt install wireguard-tools)"
    command -v python3 >/dev/null 2>&1 || die "python3 is not installed"
    mkdir -p "$out" && chmod 0700 "$out"
    python3 - "$csv" "$out" <<'PY' || exit 1
import csv, ipaddress, json, os, re, subprocess, sys
src, out = sys.argv[1], sys.argv[2]
hub_endpoint = os.environ.get('HUB_ENDPOINT', '')
hub_key = os.environ.get('HUB_PUBLIC_KEY', '')
hub_allowed = os.environ.get('HUB_ALLOWED_IPS', '').split()
ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')
def die(msg):
    sys.exit('provision.sh: ' + msg)
def wg(*args, inp=None):
    return subprocess.run(['wg', *args], input=inp, capture_output=True, text=True, check=True).stdout.strip()
peers, seen_ids, seen_ips = [], set(), set()
with open(src, newline='') as f:
    rows = list(csv.DictReader(f))
if not rows:
    die(f'{src}: no gateways (a header line, then one gateway a line)')
for n, row in enumerate(rows, start=2):
    row = {k.strip(): (v or '').strip() for k, v in row.items() if k}
    gid, addr = row.get('id', ''), row.get('wg_address', '')
    if not ID.match(gid):
        die(f'{src}:{n}: id "{gid}" is not a gateway id (1-64 of A-Z a-z 0-9 _ . -)')
    if gid in seen_ids:
        die(f'{src}:{n}: id {gid} appears twice')
    seen_ids.add(gid)
    cfg = {'gateway': {'id': gid}}
    doc = {'version': 1, 'config': cfg}
    if addr:
        try:
            iface = ipaddress.ip_interface(addr)
        except ValueError:
            die(f'{src}:{n}: wg_address "{addr}" is not an address with a prefix (10.200.0.11/24)')
        if iface.ip in seen_ips:
            die(f'{src}:{n}: wg_address {iface.ip} appears twice')
        seen_ips.add(iface.ip)
        if not hub_allowed:
            hub_allowed_here = [str(iface.network)]
        else:
            hub_allowed_here = hub_allowed
        private = wg('genkey')
        public = wg('pubkey', inp=private + '\n')
        wgc = {'address': addr}
        if hub_endpoint: wgc['hubEndpoint'] = hub_endpoint
        if hub_key: wgc['hubPublicKey'] = hub_key
        wgc['hubAllowedIps'] = hub_allowed_here
        cfg['wireguard'] = wgc
        doc['wireguardPrivateKey'] = private
        peers.append(f'[Peer]\n# {gid}\nPublicKey = {public}\nAllowedIPs = {iface.ip}/{iface.ip.max_prefixlen}\n')
    if row.get('uplink_url'): cfg['uplink'] = {'url': row['uplink_url']}
    if row.get('token'): doc['uplinkToken'] = row['token']
    if row.get('wifi_ssid'):
        doc['wifi'] = {'ssid': row['wifi_ssid'], 'passphrase': row.get('wifi_passphrase', ''), 'country': row.get('wifi_country', '')}
    if row.get('ssh_keys_file'):
        keys = [l.strip() for l in open(row['ssh_keys_file']) if l.strip() and not l.startswith('#')]
        doc['sshAuthorizedKeys'] = keys
    if row.get('pki_backup'):
        doc['pkiBackup'] = {'backup': open(row['pki_backup']).read(), 'passphrase': open(row['pki_passphrase_file']).read().rstrip('\n')}
    path = os.path.join(out, gid + '.json')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        json.dump(doc, f, indent=2)
        f.write('\n')
    print(f'{path}: {gid}' + (f' {addr}' if addr else ''))
hub = os.path.join(out, 'hub-peers.conf')
with open(hub, 'w') as f:
    f.write('# WireGuard peers for the hub: append to its wg0.conf ([Interface] stays yours), then\n'
            '# wg syncconf wg0 <(wg-quick strip wg0)\n\n' + '\n'.join(peers))
print(f'{hub}: {len(peers)} peer(s)')
PY
}

case "${1:-}" in
    write) [ $# -eq 3 ] || usage; write "$2" "$3" ;;
    make) [ $# -eq 3 ] || usage; shift; make "$@" ;;
    -h|--help) usage 0 ;;
    *) usage ;;
esac
