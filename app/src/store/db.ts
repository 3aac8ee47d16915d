import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { StoreError } from '../lib/errors.js'
import { ALERTS_DDL } from '../alerts/store.js'

export type DB = Database.Database

/**
 * Versioned migrations: migrations[i] brings the schema from version i to i+1 (PRAGMA user_version).
 * Append only; never edit a released step. Other capabilities (PKI, audit, ...) add theirs here too,
 * so one database file has one version number.
 *
 * Rollback rule (A/B updates: the previous release may boot on a database this one migrated):
 * - A step is additive unless it says `breaksOlder: true`: it only adds tables, columns with
 *   defaults, indexes or rows, and older code that ignores them still reads and writes the database
 *   correctly. Nothing is dropped, renamed or retyped, and no data moves out of a table an older
 *   release still reads (the traffic log rollups are a new table; `traffic_logs` stays, and is
 *   pruned by age).
 * - migrate() records in store_meta `min_compatible_version`: the lowest schema version whose code
 *   may open this database, i.e. the version reached by the newest step marked `breaksOlder`
 *   (0 when none is). A release that knows N steps opens a database at version > N when
 *   min_compatible_version <= N, and leaves the schema as it is; otherwise it refuses (exit, no write).
 * - A destructive change is made in two releases: the first stops using the old structure (additive),
 *   the next one, marked `breaksOlder`, removes it. So the release before it can still read the file.
 * Releases up to schema version 3 predate this rule and refuse any newer version.
 */
export const migrations: ReadonlyArray<{ name: string, sql: string, breaksOlder?: true }> = [
  {
    name: 'outbox, dead letters, devices, traffic log',
    sql: `
      -- AUTOINCREMENT: an id is never reused, even after the outbox has been emptied, because the
      -- cloud deduplicates by message id and batch id.
      CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        device      TEXT    NOT NULL,
        transport   TEXT    NOT NULL,
        stream      TEXT    NOT NULL,
        epoch       INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        payload     TEXT    NOT NULL,
        bytes       INTEGER NOT NULL,
        batch_id    TEXT
      );
      CREATE TABLE dead_letters (
        id          INTEGER PRIMARY KEY,
        outbox_id   INTEGER NOT NULL,
        device      TEXT    NOT NULL,
        transport   TEXT    NOT NULL,
        stream      TEXT    NOT NULL,
        epoch       INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        payload     TEXT    NOT NULL,
        bytes       INTEGER NOT NULL,
        batch_id    TEXT,
        failed_at   INTEGER NOT NULL,
        status      INTEGER,
        reason      TEXT    NOT NULL
      );
      CREATE TABLE devices (
        id          TEXT PRIMARY KEY,
        created_at  INTEGER NOT NULL,
        status      TEXT    NOT NULL DEFAULT 'active',
        last_seen   INTEGER,
        messages    INTEGER NOT NULL DEFAULT 0,
        rejected    INTEGER NOT NULL DEFAULT 0,
        last_epoch  INTEGER NOT NULL DEFAULT -1,
        last_seq    INTEGER NOT NULL DEFAULT -1
      );
      CREATE TABLE traffic_logs (
        id          INTEGER PRIMARY KEY,
        at          INTEGER NOT NULL,
        device      TEXT,
        transport   TEXT    NOT NULL,
        stream      TEXT,
        seq         INTEGER,
        bytes       INTEGER NOT NULL,
        outcome     TEXT    NOT NULL,
        reason      TEXT
      );
      CREATE INDEX traffic_logs_at ON traffic_logs(at);
      CREATE INDEX traffic_logs_device ON traffic_logs(device, at);
      -- A random name for this database: ids sent to the cloud stay unique if /data is ever recreated.
      CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      INSERT INTO store_meta (key, value) VALUES ('instance', lower(hex(randomblob(6))));
    `
  },
  {
    name: 'hash-chained audit log',
    sql: `
      CREATE TABLE audit_log (
        id        INTEGER PRIMARY KEY,
        at        INTEGER NOT NULL,
        type      TEXT    NOT NULL,
        device    TEXT,
        source    TEXT,
        detail    TEXT    NOT NULL,
        prev_hash TEXT    NOT NULL,
        hash      TEXT    NOT NULL
      );
    `
  },
  {
    name: 'device registry: certificates, revocation, trust, quarantine',
    sql: `
      ALTER TABLE devices ADD COLUMN enrolled_at INTEGER;
      ALTER TABLE devices ADD COLUMN enrolment TEXT;
      ALTER TABLE devices ADD COLUMN cert_serial TEXT;
      ALTER TABLE devices ADD COLUMN cert_not_after INTEGER;
      ALTER TABLE devices ADD COLUMN status_changed_at INTEGER;
      ALTER TABLE devices ADD COLUMN status_reason TEXT;
      ALTER TABLE devices ADD COLUMN trust_score REAL;
      ALTER TABLE devices ADD COLUMN trust_events TEXT NOT NULL DEFAULT '{}';
      CREATE TABLE certificates (
        serial      TEXT PRIMARY KEY,
        device      TEXT    NOT NULL,
        issued_at   INTEGER NOT NULL,
        not_after   INTEGER NOT NULL,
        fingerprint TEXT    NOT NULL,
        revoked_at  INTEGER
      );
      CREATE INDEX certificates_device ON certificates(device);
      CREATE TABLE registry_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
      INSERT INTO registry_meta (key, value) VALUES ('version', 0), ('crl_number', 1);
      CREATE TABLE held_messages (
        id          INTEGER PRIMARY KEY,
        device      TEXT    NOT NULL,
        transport   TEXT    NOT NULL,
        stream      TEXT    NOT NULL,
        received_at INTEGER NOT NULL,
        payload     BLOB    NOT NULL
      );
      CREATE INDEX held_messages_device ON held_messages(device, id);
    `
  },
  {
    name: 'traffic rollups per device per minute; outbox delivered watermark',
    sql: `
      -- One row per minute, device, transport, stream, outcome and reason, written in bulk once a
      -- minute, instead of one traffic_logs row (and two index entries) per message.
      CREATE TABLE traffic_rollups (
        minute    INTEGER NOT NULL,
        device    TEXT    NOT NULL,
        transport TEXT    NOT NULL,
        stream    TEXT    NOT NULL,
        outcome   TEXT    NOT NULL,
        reason    TEXT    NOT NULL,
        messages  INTEGER NOT NULL,
        bytes     INTEGER NOT NULL,
        PRIMARY KEY (minute, device, transport, stream, outcome, reason)
      ) WITHOUT ROWID;
      -- Outbox rows with id <= delivered_through have reached the cloud and are deleted in bulk later.
      -- An older release ignores it and sends them once more (at least once; same message ids).
      INSERT OR IGNORE INTO store_meta (key, value) VALUES ('delivered_through', '0');
    `
  },
  { name: 'alerts firing, the alert lane\'s queue, refusal counts per device', sql: ALERTS_DDL }
]

export interface OpenOptions { synchronous?: 'FULL' | 'NORMAL', readonly?: boolean }

/**
 * Page size of a NEW database. A commit writes every page it touches into the WAL; on an SD card the
 * bytes written per small commit are pages x page size, so 1 KB pages write a quarter of 4 KB ones
 * for the few-row commits of a quiet gateway (measured: app/docs/write-path.md). An existing
 * database keeps its page size (changing it needs a VACUUM of the whole file).
 */
export const PAGE_SIZE = 1024
/**
 * WAL pages before SQLite checkpoints them into the database file. Pages rewritten often (the
 * outbox's last leaf, the device rows, sqlite_sequence) reach the database file once per
 * checkpoint, so a larger WAL writes them fewer times; 4,096 pages of 1 KB: a checkpoint about
 * every 10 s at 1,000 msg/s.
 */
export const WAL_AUTOCHECKPOINT_PAGES = 4096
/** The WAL file is cut back to this after a checkpoint, so a burst does not keep /data full. */
export const JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024

export function openDatabase (file: string, opts: OpenOptions = {}): DB {
  let db: DB
  try {
    if (file !== ':memory:' && opts.readonly !== true) mkdirSync(dirname(file), { recursive: true, mode: 0o750 })
    db = new Database(file, { readonly: opts.readonly === true, fileMustExist: opts.readonly === true })
  } catch (err) {
    throw new StoreError('GW_ERR_STORE_OPEN', `cannot open database ${file}: ${(err as Error).message}`, { cause: err })
  }
  db.pragma('busy_timeout = 5000')
  if (opts.readonly !== true) {
    // Only takes effect on a database with no pages yet.
    if ((db.pragma('page_count', { simple: true }) as number) === 0) db.pragma(`page_size = ${PAGE_SIZE}`)
    db.pragma('journal_mode = WAL')
    db.pragma(`synchronous = ${opts.synchronous ?? 'FULL'}`)
    db.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`)
    db.pragma(`journal_size_limit = ${JOURNAL_SIZE_LIMIT}`)
    db.pragma('foreign_keys = ON')
    migrate(db)
  }
  return db
}

/** The lowest schema version whose code may use a database migrated through `version` steps. */
export function minCompatibleVersion (version: number): number {
  let min = 0
  for (let v = 0; v < Math.min(version, migrations.length); v++) if (migrations[v]!.breaksOlder === true) min = v + 1
  return min
}

export function migrate (db: DB): number {
  const current = db.pragma('user_version', { simple: true }) as number
  if (current > migrations.length) {
    // Written by a newer release: usable if that release says its changes are compatible with ours.
    const row = hasTable(db, 'store_meta')
      ? db.prepare("SELECT value FROM store_meta WHERE key = 'min_compatible_version'").get() as { value: string } | undefined
      : undefined
    const min = row === undefined ? Infinity : Number(row.value)
    if (min <= migrations.length) return current
    throw new StoreError('GW_ERR_STORE_VERSION', `database schema version ${current} is newer than this gateway knows (${migrations.length}) and needs at least version ${row === undefined ? current : row.value}; refusing to touch it`)
  }
  for (let v = current; v < migrations.length; v++) {
    const step = migrations[v]!
    db.transaction(() => {
      db.exec(step.sql)
      db.pragma(`user_version = ${v + 1}`)
      db.prepare("INSERT INTO store_meta (key, value) VALUES ('min_compatible_version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .run(String(minCompatibleVersion(v + 1)))
    }).immediate()
  }
  return migrations.length
}

function hasTable (db: DB, name: string): boolean {
  return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined
}
