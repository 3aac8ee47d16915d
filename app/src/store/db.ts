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
 */
export const migrations: ReadonlyArray<{ name: string, sql: string }> = [
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
  { name: 'alerts firing, the alert lane\'s queue, refusal counts per device', sql: ALERTS_DDL }
]

export interface OpenOptions { synchronous?: 'FULL' | 'NORMAL', readonly?: boolean }

export function openDatabase (file: string, opts: OpenOptions = {}): DB {
  let db: DB
  try {
    if (file !== ':memory:' && opts.readonly !== true) mkdirSync(dirname(file), { recursive: true, mode: 0o750 })
    db = new Database(file, { readonly: opts.readonly === true, fileMustExist: opts.readonly === true })
  } catch (err) {
    throw new StoreError('OPEN', `cannot open database ${file}: ${(err as Error).message}`, { cause: err })
  }
  db.pragma('busy_timeout = 5000')
  if (opts.readonly !== true) {
    db.pragma('journal_mode = WAL')
    db.pragma(`synchronous = ${opts.synchronous ?? 'FULL'}`)
    db.pragma('foreign_keys = ON')
    migrate(db)
  }
  return db
}

export function migrate (db: DB): number {
  const current = db.pragma('user_version', { simple: true }) as number
  if (current > migrations.length) {
    throw new StoreError('VERSION', `database schema version ${current} is newer than this gateway knows (${migrations.length}); refusing to touch it`)
  }
  for (let v = current; v < migrations.length; v++) {
    const step = migrations[v]!
    db.transaction(() => {
      db.exec(step.sql)
      db.pragma(`user_version = ${v + 1}`)
    }).immediate()
  }
  return migrations.length
}
