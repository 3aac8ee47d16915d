#
# SPDX-License-Identifier: MIT
#
# Runtime tests of the IoT gateway image (testimage; QEMU: kas build kas.yml:conf/qemuarm64.yml
# -c testimage, or a Pi on the bench with TEST_TARGET = "simpleremote", or "serial" for a release
# image without SSH). The repository's tests/oeqa-standin.test.mjs runs them with oe-core's
# oe-test and its serial target on the arm64 stand-in (tests/STANDIN.md).
#
# What they prove on a booted image: the gateway service is active and reports ready on /health,
# the root file system is read-only and /data is writable, only the intended ports listen on
# non-loopback addresses, the nftables ruleset of the gateway is loaded (not the fail-closed
# fallback), and a message published over MQTT/TLS with an enrolled device certificate reaches an
# HTTPS sink.

import json
import os
import shutil
import subprocess
import tempfile
import time

from oeqa.core.decorator.depends import OETestDepends
from oeqa.runtime.case import OERuntimeTestCase
from oeqa.runtime.decorator.package import OEHasPackage

# Listeners allowed on non-loopback addresses, by protocol. Loopback listeners (management API,
# the broker's gateway listener, resolved's stub) are not reachable from outside at all. The
# management API's port is allowed on the WireGuard tunnel's address only (iot-gateway-api.socket,
# FreeBind), never on an unspecified address (0.0.0.0 / ::).
ALLOWED_TCP = {8883}            # MQTT over TLS for devices (firewall: LAN only)
API_PORT = 8080
ALLOWED_TCP_TEST_IMAGE = {22}   # SSH of the test image (conf/qemuarm64.yml, conf/debug.yml)
ALLOWED_UDP = {
    67,      # DHCP server of the IoT LAN (systemd-networkd)
    68,      # DHCP client on the WAN
    546,     # DHCPv6 client on the WAN
    5683,    # CoAP for devices (firewall: LAN only)
    51820,   # WireGuard (kernel socket)
}


def parse_proc_net(text, listening_state):
    """(address, port) of sockets in /proc/net/{tcp,tcp6,udp,udp6} text with the given state."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != listening_state:
            continue
        addr_hex, port_hex = fields[1].split(':')
        out.append((addr_hex, int(port_hex, 16)))
    return out


def hex_ipv4(addr):
    """'10.200.0.2' as /proc/net/tcp shows it (little-endian hex)."""
    return ''.join('%02X' % int(b) for b in reversed(addr.split('.')))


def is_loopback(addr_hex):
    if len(addr_hex) == 8:     # IPv4, little-endian
        return addr_hex.endswith('7F')
    # IPv6 ::1, or ::ffff:127.x.x.x
    return addr_hex == '00000000000000000000000001000000' or (
        addr_hex.startswith('0000000000000000FFFF0000') and addr_hex.endswith('7F'))


def wait_until(what, probe, seconds=120, interval=3):
    """Calls probe() until it returns a true value and returns that value; after `seconds`, an
    AssertionError with `what` and the last value (a target under test is slow and loaded: poll a
    condition, never sleep a fixed time and hope)."""
    deadline = time.time() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError('%s: not within %d s (last: %r)' % (what, seconds, value))
        time.sleep(interval)


def run_ok(target, cmd, timeout=None):
    status, output = target.run(cmd, timeout) if timeout else target.run(cmd)
    if status != 0:
        raise AssertionError('"%s" failed:\n%s' % (cmd, output))
    return output


def wait_for(target, cmd, seconds=120, interval=3):
    """Runs cmd on the target until it exits 0; its output."""
    last = ['']

    def probe():
        status, output = target.run(cmd)
        last[0] = output
        return status == 0
    wait_until('"%s" succeeds' % cmd, probe, seconds, interval)
    return last[0]


class IotGatewayCase(OERuntimeTestCase):
    """The helpers of both classes below (no tests of its own)."""

    def run_ok(self, cmd, timeout=None):
        return run_ok(self.target, cmd, timeout)

    def wait_until(self, what, probe, seconds=120, interval=3):
        return wait_until(what, probe, seconds, interval)

    def wait_for(self, cmd, seconds=120, interval=3):
        return wait_for(self.target, cmd, seconds, interval)

    def http_get(self, url):
        # node is on the image anyway; no curl/wget needed
        script = ("fetch(%s).then(async r => { console.log(r.status); console.log(await r.text()) })"
                  ".catch(e => { console.error(e.message); process.exit(1) })") % json.dumps(url)
        return self.target.run("node -e '%s'" % script)


class IotGatewayTest(IotGatewayCase):

    # No OETestDepends on ssh.SSHTest: the module must also load on its own (oe-test --list-tests);
    # without SSH every test here fails at its first command anyway.
    @OEHasPackage(['iot-gateway'])
    def test_gateway_active_and_ready(self):
        self.wait_for('systemctl is-active iot-gateway.service', seconds=300)
        status, output = self.target.run('systemctl show -p Type,NotifyAccess,User iot-gateway.service')
        self.assertIn('Type=notify', output)
        self.assertIn('User=iot-gateway', output)
        # Type=notify: "active" means READY=1 arrived; /health must agree
        def health():
            status, output = self.http_get('http://127.0.0.1:8080/health')
            return status == 0 and output.splitlines()[0].strip() == '200'
        self.wait_until('/health answers 200', health, seconds=60)

    @OETestDepends(['iot_gateway.IotGatewayTest.test_gateway_active_and_ready'])
    def test_gateway_has_no_capabilities(self):
        pid = self.run_ok('systemctl show -p MainPID --value iot-gateway.service').strip()
        status = self.run_ok('cat /proc/%s/status' % pid)
        caps = {line.split(':')[0]: line.split(':')[1].strip() for line in status.splitlines()
                if line.startswith('Cap')}
        for name in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'):
            self.assertEqual(int(caps[name], 16), 0, msg='%s of the gateway is %s' % (name, caps[name]))

    def test_root_read_only_data_writable(self):
        mounts = self.run_ok('cat /proc/mounts')
        root = [l.split() for l in mounts.splitlines() if l.split()[1] == '/' and l.split()[0] != 'rootfs']
        self.assertTrue(root, msg=mounts)
        self.assertIn('ro', root[-1][3].split(','), msg='/ is not mounted read-only: %s' % root[-1])
        status, output = self.target.run('touch /oeqa-probe')
        self.assertNotEqual(status, 0, msg='could write to the root file system')

        data = [l.split() for l in mounts.splitlines() if l.split()[1] == '/data']
        self.assertTrue(data, msg='/data is not a mount point:\n%s' % mounts)
        self.assertIn('rw', data[-1][3].split(','))
        self.run_ok('touch /data/.oeqa-probe && rm /data/.oeqa-probe')
        owner = self.run_ok('stat -c %U:%G /data/iot-gateway').strip()
        self.assertEqual(owner, 'iot-gateway:iot-pki')
        # IOT_GATEWAY_DATA_GROW: the growth unit ran before /data was mounted and succeeded (on a
        # disk the size of the image it finds nothing to do)
        status, _ = self.target.run('systemctl is-enabled iot-gateway-grow-data.service')
        if status == 0:
            result = self.run_ok('systemctl show -p ActiveState,Result iot-gateway-grow-data.service')
            self.assertIn('ActiveState=active', result)
            self.assertIn('Result=success', result)

    @OETestDepends(['iot_gateway.IotGatewayTest.test_gateway_active_and_ready'])
    def test_only_intended_ports_listen(self):
        allowed_tcp = set(ALLOWED_TCP)
        # testimage itself logs in over SSH, so the test image has an SSH server
        allowed_tcp |= ALLOWED_TCP_TEST_IMAGE
        # the API on the tunnel's address, when the image has a tunnel (gateway.json)
        cfg = json.loads(self.run_ok('cat /etc/iot-gateway/gateway.json'))
        tunnel = (cfg.get('wireguard', {}).get('address') or '').split('/')[0]
        api_addrs = {hex_ipv4(tunnel)} if tunnel and ':' not in tunnel else set()
        unexpected = []
        for proto, state, allowed in (('tcp', '0A', allowed_tcp), ('udp', '07', ALLOWED_UDP)):
            for family in ('', '6'):
                status, text = self.target.run('cat /proc/net/%s%s' % (proto, family))
                if status != 0:
                    continue
                for addr, port in parse_proc_net(text, state):
                    if is_loopback(addr) or port in allowed:
                        continue
                    if proto == 'tcp' and port == API_PORT and addr in api_addrs:
                        continue
                    unexpected.append('%s%s %s:%d' % (proto, family, addr, port))
        self.assertEqual(unexpected, [], msg='unexpected listeners: %s' % unexpected)
        # the daemon's own API socket is on loopback (api.host's default), not 0.0.0.0
        self.assertNotIn('api', cfg, msg='gateway.json sets api.*: the API must stay on 127.0.0.1')

    @OETestDepends(['iot_gateway.IotGatewayTest.test_gateway_active_and_ready'])
    def test_identity_printed(self):
        """First boot prints the identity: gateway id, WireGuard public key, CA fingerprint."""
        self.wait_for('systemctl is-active iot-gateway-identity.service', seconds=120)
        text = self.run_ok('cat /run/iot-gateway-identity/identity.txt')
        self.assertRegex(text, r'(?m)^gateway-id: \S+$')
        self.assertRegex(text, r'(?m)^wireguard-public-key: [A-Za-z0-9+/]{43}=$')
        self.assertRegex(text, r'(?m)^ca-sha256: ([0-9A-F]{2}:){31}[0-9A-F]{2}$')
        journal = self.run_ok('journalctl -b -u iot-gateway-identity.service -o cat')
        self.assertIn('wireguard-public-key:', journal)

    def test_machine_id_on_data(self):
        """The machine id is the one committed to /data, bind-mounted over the read-only /etc/machine-id."""
        self.run_ok('systemctl is-active iot-gateway-machine-id.service')
        saved = self.run_ok('cat /data/machine-id').strip()
        self.assertRegex(saved, r'^[0-9a-f]{32}$')
        self.assertEqual(self.run_ok('cat /etc/machine-id').strip(), saved)
        self.assertEqual(self.run_ok('stat -c %d:%i /etc/machine-id'), self.run_ok('stat -c %d:%i /data/machine-id'))
        status, _ = self.target.run('sh -c "echo 0 > /etc/machine-id"')
        self.assertNotEqual(status, 0, msg='/etc/machine-id is writable')

    def test_data_mounted_no_alert(self):
        """/data is mounted with the flash-friendly options and was checked; no alert was raised."""
        opts = self.run_ok("awk '$2 == \"/data\" {print $4}' /proc/mounts").strip().split(',')
        for o in ('noatime', 'nodev', 'nosuid', 'noexec'):
            self.assertIn(o, opts, msg='/data options: %s' % opts)
        self.assertTrue(any(o.startswith('commit=') for o in opts), msg='/data options: %s' % opts)
        self.run_ok('test ! -e /run/iot-gateway-data-failed')
        result = self.run_ok('systemctl show -p Result --value "systemd-fsck@dev-disk-by\\x2dlabel-data.service"').strip()
        self.assertEqual(result, 'success', msg='fsck of /data: %s' % result)

    @OEHasPackage(['nftables'])
    def test_firewall_loaded(self):
        self.run_ok('systemctl is-active iot-gateway-firewall.service')
        tables = self.run_ok('nft list tables')
        self.assertNotIn('iot_gateway_fallback', tables,
                         msg='the fail-closed fallback ruleset is active: the rendered one failed')
        ruleset = self.run_ok('nft list ruleset')
        self.assertRegex(ruleset, r'hook input priority [^;]*; policy drop;',
                         msg='no input chain with policy drop:\n%s' % ruleset)
        self.assertRegex(ruleset, r'hook forward priority [^;]*; policy drop;',
                         msg='forwarding is not dropped:\n%s' % ruleset)

    @OEHasPackage(['iot-gateway-ssh'])
    def test_ssh_key_only_host_keys_on_data(self):
        """Images built with IOT_GATEWAY_SSH_AUTHORIZED_KEYS: dropbear by key only, where the drop-in says."""
        self.run_ok('systemctl start dropbearkey.service')
        self.run_ok('test -s /data/ssh/dropbear_ed25519_host_key && test -s /data/ssh/dropbear_ecdsa_host_key')
        self.assertEqual(self.run_ok('stat -c %a /data/ssh').strip(), '700')
        before = self.run_ok('md5sum /data/ssh/dropbear_ed25519_host_key')
        # the key unit is idempotent: a restart keeps the identity
        self.run_ok('systemctl restart dropbearkey.service')
        self.assertEqual(self.run_ok('md5sum /data/ssh/dropbear_ed25519_host_key'), before)
        # the effective command of the template (the last ExecStart= after the reset in our drop-in)
        unit = self.run_ok('systemctl cat dropbear@.service')
        execs = [l for l in unit.splitlines() if l.startswith('ExecStart=') and l != 'ExecStart=']
        self.assertTrue(execs, msg=unit)
        self.assertIn(' -s ', execs[-1] + ' ', msg='password logins are not disabled: %s' % execs[-1])
        self.assertIn('/data/ssh/dropbear_ed25519_host_key', execs[-1])
        dropin = self.run_ok('cat /usr/lib/systemd/system/dropbear.socket.d/iot-gateway.conf')
        wanted = [l.split('=', 1)[1] for l in dropin.splitlines() if l.startswith('ListenStream=') and l != 'ListenStream=']
        # a bare port (IOT_GATEWAY_SSH_FROM_WAN) is every address: systemd shows it as [::]:port
        wanted = ['[::]:' + w if w.isdigit() else w for w in wanted]
        listen = self.run_ok('systemctl show -p Listen --value dropbear.socket').split()
        self.assertEqual(sorted(l for l in listen if l != '(Stream)'), sorted(wanted),
                         msg='dropbear.socket listens on %s, the drop-in says %s' % (listen, wanted))
        keys = self.run_ok('cat ~root/.ssh/authorized_keys')
        self.assertRegex(keys, r'(?m)^(\S+ )?(ssh-|ecdsa-|sk-)', msg='no public key in root\'s authorized_keys')


class IotGatewayDeliveryTest(IotGatewayCase):
    """An enrolled device publishes over MQTT/TLS on the target: the message reaches an HTTPS sink,
    the broker's log reaches the gateway, the ACL denies another device's topic. One sink, one
    gateway restart and one enrolment for the class, made by the first case that runs (after its
    OEHasPackage check: without mosquitto-clients every case is skipped and nothing is set up)."""

    DEVICE = 'oeqa-device-1'
    WORK = '/run/oeqa-iotgw'

    ready = False

    # setUp and tearDownClass, not setUpMethod / tearDownClassMethod: oeqa's loader REPLACES those
    # two with the class's setUp / tearDownClass (after its decorators, e.g. OEHasPackage, ran), so
    # a setUpMethod defined here never runs.
    def setUp(self):
        super().setUp()
        cls = type(self)
        if cls.ready:
            return
        openssl = shutil.which('openssl')
        if not openssl:
            self.skipTest('openssl is needed on the build host to make the sink certificate')
        target = self.target
        cls.work = tempfile.mkdtemp(prefix='oeqa-iotgw-')
        # a throwaway CA and server certificate for the sink on the target (127.0.0.1)
        subprocess.check_call([openssl, 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
                               '-nodes', '-days', '2', '-subj', '/CN=oeqa sink', '-addext', 'subjectAltName=IP:127.0.0.1',
                               '-keyout', os.path.join(cls.work, 'sink.key'), '-out', os.path.join(cls.work, 'sink.crt')],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(cls.work, 'sink.js'), 'w') as f:
            f.write(SINK_JS)
        run_ok(target, 'mkdir -p %s' % cls.WORK)
        for name in ('sink.key', 'sink.crt', 'sink.js'):
            target.copyTo(os.path.join(cls.work, name), '%s/%s' % (cls.WORK, name))
        run_ok(target, 'chmod 0755 %s && chmod 0644 %s/*' % (cls.WORK, cls.WORK))
        run_ok(target, 'systemd-run --unit=oeqa-iotgw-sink -p Type=simple node %s/sink.js' % cls.WORK)
        wait_for(target, 'test -e %s/listening' % cls.WORK, 30, 1)
        # point the running gateway at the sink (a runtime drop-in: the root is read-only)
        run_ok(target, 'mkdir -p /run/systemd/system/iot-gateway.service.d && printf "%s" > '
               '/run/systemd/system/iot-gateway.service.d/oeqa.conf' % (
                   '[Service]\\nEnvironment=GATEWAY_UPLINK_URL=https://127.0.0.1:9443/ingest '
                   'GATEWAY_UPLINK_CA_FILE=%s/sink.crt\\n' % cls.WORK))
        run_ok(target, 'systemctl daemon-reload && systemctl restart iot-gateway.service')
        wait_for(target, 'systemctl is-active iot-gateway.service', 120)
        # as the gateway's user: enrolment writes its registry and CA on /data/iot-gateway
        run_ok(target, 'mkdir -p %s/dev && chown iot-gateway:iot-gateway %s/dev' % (cls.WORK, cls.WORK))
        # --pipe hands the service this shell's descriptors; given the serial console's terminal,
        # systemd resets it (echo back on) and oe-core's serial target then misreads every later
        # command's status: no terminal for it, the output through a file
        status, output = target.run('systemd-run --wait --pipe --quiet --uid=iot-gateway --gid=iot-gateway '
                                    'iot-gateway device enroll {d} --out {w}/dev </dev/null >{w}/enroll.log 2>&1'.format(
                                        d=cls.DEVICE, w=cls.WORK))
        cls.enrolled = run_ok(target, 'cat %s/enroll.log' % cls.WORK)
        if status != 0:
            raise AssertionError('enrolment of %s failed (%d):\n%s' % (cls.DEVICE, status, cls.enrolled))
        cls.ready = True

    @classmethod
    def tearDownClass(cls):
        if not cls.ready:
            return
        cls.tc.target.run('systemctl stop oeqa-iotgw-sink.service; '
                          'rm -rf /run/systemd/system/iot-gateway.service.d/oeqa.conf %s; '
                          'systemctl daemon-reload; systemctl restart iot-gateway.service' % cls.WORK)
        shutil.rmtree(getattr(cls, 'work', ''), ignore_errors=True)

    def publish(self, topic, payload):
        status, output = self.target.run("mosquitto_pub -h 127.0.0.1 -p 8883 -q 1 --cafile /data/iot-gateway/pki/ca.crt "
                                         "--cert {w}/dev/{d}.crt --key {w}/dev/{d}.key -t {t} -m '{p}'".format(
                                             w=self.WORK, d=self.DEVICE, t=topic, p=payload))
        if status != 0:
            # which of the three files it could not open, and what the enrolment left
            _, files = self.target.run('ls -la %s %s/dev /data/iot-gateway/pki' % (self.WORK, self.WORK))
            output += '\n' + files + '\nenrolment: ' + getattr(type(self), 'enrolled', '')
        return status, output

    @OEHasPackage(['mosquitto-clients'])
    def test_device_message_reaches_sink(self):
        now = int(time.time() * 1000)
        payload = json.dumps({'seq': now, 'ts': now, 'temperature': 21.5})
        status, output = self.publish('devices/%s/telemetry' % self.DEVICE, payload)
        self.assertEqual(status, 0, msg=output)
        # this message's own clock value: the broker-log case's message of the same device reaches
        # the sink too, and may be the only one there yet
        def at_sink():
            status, output = self.target.run('grep -F %d %s/received.jsonl' % (now, self.WORK))
            return output if status == 0 else None
        received = self.wait_until('the message at the sink', at_sink, seconds=60, interval=2)
        self.assertIn(self.DEVICE, received)
        self.assertIn('21.5', received)

    @OEHasPackage(['mosquitto-clients'])
    def test_broker_log_in_its_journal_namespace(self):
        """The broker logs into its own journal namespace, where the gateway follows it."""
        # the gateway refuses a device's replayed sequence numbers: each case takes the clock's
        status, output = self.publish('devices/%s/telemetry' % self.DEVICE, json.dumps({'seq': int(time.time() * 1000)}))
        self.assertEqual(status, 0, msg=output)
        self.wait_for("journalctl --namespace=mosquitto -u mosquitto -o cat | grep -q \"u'%s'\"" % self.DEVICE, seconds=30)

    @OEHasPackage(['mosquitto-clients'])
    def test_acl_denial_counted(self):
        """A publish on another device's topic is denied by the broker's ACL and seen by the gateway."""
        # The gateway exports every known series from its start, at 0: the count must RISE (a
        # series that is merely present proves nothing).
        before = self.metric(ACL_DENIED)
        self.assertIsNotNone(before, msg='%s is not in /metrics' % ACL_DENIED)
        # MQTT 3.1.1 has no negative PUBACK: the broker acknowledges and drops, so the client
        # exits 0 (a TLS or authentication failure would not: the device must get through to be denied)
        status, output = self.publish('devices/someone-else/telemetry', '{}')
        self.assertEqual(status, 0, msg=output)

        def denied():
            after = self.metric(ACL_DENIED)
            return after is not None and after > before and after
        self.wait_until('%s above %s' % (ACL_DENIED, before), denied, seconds=60)

    def metric(self, series):
        """The value of one series in the gateway's /metrics (None: absent or unreachable)."""
        status, output = self.http_get('http://127.0.0.1:8080/metrics')
        if status != 0:
            return None
        for line in output.splitlines():
            name, _, value = line.strip().rpartition(' ')
            if name == series:
                return float(value)
        return None


ACL_DENIED = 'gateway_security_events_total{type="acl_denied"}'

# The HTTPS "cloud" on the target: stores every request body (gunzipped) as one line.
SINK_JS = r"""
const https = require('node:https'), fs = require('node:fs'), zlib = require('node:zlib');
const dir = '/run/oeqa-iotgw';
const server = https.createServer({ key: fs.readFileSync(dir + '/sink.key'), cert: fs.readFileSync(dir + '/sink.crt') }, (req, res) => {
  const chunks = [];
  req.on('data', c => chunks.push(c));
  req.on('end', () => {
    let body = Buffer.concat(chunks);
    if (req.headers['content-encoding'] === 'gzip') body = zlib.gunzipSync(body);
    fs.appendFileSync(dir + '/received.jsonl', body.toString('utf8').replace(/\n/g, ' ') + '\n');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
  });
});
server.listen(9443, '127.0.0.1', () => fs.writeFileSync(dir + '/listening', ''));
"""
