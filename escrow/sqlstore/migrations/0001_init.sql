-- fvescrow metadata schema, version 1.
--
-- One file for SQLite and PostgreSQL: the type names in double braces are
-- filled in per dialect (see schemaTypes in dialect.go). Every *_at and time
-- column is BIGINT microseconds since the Unix epoch (UTC); NULL means "not
-- yet". Nothing here is secret: CMS blobs are encrypted to an escrow
-- certificate.

CREATE TABLE devices (
	id          {{.Key}} PRIMARY KEY,
	udid        TEXT NOT NULL DEFAULT '',
	serial      TEXT NOT NULL DEFAULT '',
	device_key  TEXT NOT NULL DEFAULT '',
	hostname    TEXT NOT NULL DEFAULT '',
	model       TEXT NOT NULL DEFAULT '',
	os_version  TEXT NOT NULL DEFAULT '',
	owner       TEXT NOT NULL DEFAULT '',
	owner_email TEXT NOT NULL DEFAULT '',
	platform    TEXT NOT NULL DEFAULT '',
	attrs       TEXT NOT NULL DEFAULT '{}', -- JSON object of strings
	created_at  BIGINT NOT NULL,
	updated_at  BIGINT NOT NULL,
	retired_at  BIGINT
);
-- Exact lookups (a serial typed at the help desk, an MDM UDID). Substring
-- search scans; fine for fleets of tens of thousands.
CREATE INDEX devices_serial ON devices (serial);
CREATE INDEX devices_udid ON devices (udid);
CREATE INDEX devices_owner_email ON devices (owner_email);

CREATE TABLE key_versions (
	id               {{.AutoID}},
	device           {{.Key}} NOT NULL REFERENCES devices (id),
	kind             TEXT NOT NULL,
	seq              INTEGER NOT NULL,
	source           TEXT NOT NULL DEFAULT '',
	status           TEXT NOT NULL,
	secret_version   INTEGER NOT NULL DEFAULT 0,
	cert_fingerprint TEXT NOT NULL DEFAULT '',
	cms_sha256       TEXT NOT NULL DEFAULT '', -- the first CMS of the version
	error            TEXT NOT NULL DEFAULT '',
	warning          TEXT NOT NULL DEFAULT '',
	received_at      BIGINT NOT NULL,
	superseded_at    BIGINT,
	disclosed_at     BIGINT,
	verified_at      BIGINT,
	UNIQUE (device, kind, seq)
);
-- The current version of a device and kind: escrowed and not superseded.
CREATE INDEX key_versions_current ON key_versions (device, kind)
	WHERE status = 'escrowed' AND superseded_at IS NULL;

-- Every CMS blob seen, mapped to the version it holds (several blobs can hold
-- the same key: a rotation's reply and the next SecurityInfo).
CREATE TABLE key_cms (
	device      {{.Key}} NOT NULL,
	cms_sha256  TEXT NOT NULL,
	version_id  BIGINT NOT NULL REFERENCES key_versions (id),
	cms         {{.Bytes}},
	received_at BIGINT NOT NULL,
	PRIMARY KEY (device, cms_sha256)
);
CREATE INDEX key_cms_version ON key_cms (version_id);

-- Blobs received and not yet escrowed. No foreign key to devices: a blob is
-- stored before anything else, so it survives whatever fails next.
CREATE TABLE outbox (
	id            {{.AutoID}},
	device        {{.Key}} NOT NULL,
	serial        TEXT NOT NULL DEFAULT '',
	kind          TEXT NOT NULL,
	source        TEXT NOT NULL DEFAULT '',
	cms           {{.Bytes}} NOT NULL,
	cms_sha256    TEXT NOT NULL,
	received_at   BIGINT NOT NULL,
	attempts      INTEGER NOT NULL DEFAULT 0,
	last_error    TEXT NOT NULL DEFAULT '',
	failed_at     BIGINT,
	next_attempt  BIGINT NOT NULL,
	claimed_by    TEXT NOT NULL DEFAULT '',
	claimed_until BIGINT,
	UNIQUE (device, cms_sha256)
);
CREATE INDEX outbox_next_attempt ON outbox (next_attempt);

-- The hash-chained audit log (see escrow.ChainHash). Rows are only ever
-- inserted, one at a time, under the audit lock.
CREATE TABLE audit (
	seq        BIGINT PRIMARY KEY,
	time       BIGINT NOT NULL,
	actor_kind TEXT NOT NULL,
	actor_id   TEXT NOT NULL,
	actor_name TEXT NOT NULL DEFAULT '',
	action     TEXT NOT NULL,
	device     {{.Key}} NOT NULL DEFAULT '',
	reason     TEXT NOT NULL DEFAULT '',
	ticket     TEXT NOT NULL DEFAULT '',
	detail     TEXT NOT NULL DEFAULT '{}', -- JSON object of strings
	prev_hash  TEXT NOT NULL,
	hash       TEXT NOT NULL
);
CREATE INDEX audit_device ON audit (device, seq);
CREATE INDEX audit_actor_id ON audit (actor_id, seq);
CREATE INDEX audit_action ON audit (action, seq);
CREATE INDEX audit_time ON audit (time);

CREATE TABLE audit_checkpoints (
	seq       BIGINT PRIMARY KEY,
	hash      TEXT NOT NULL,
	time      BIGINT NOT NULL,
	key_id    TEXT NOT NULL,
	signature {{.Bytes}} NOT NULL
);

-- Public escrow certificates, every one ever deployed.
CREATE TABLE escrow_certs (
	fingerprint TEXT PRIMARY KEY,
	der         {{.Bytes}} NOT NULL,
	added_at    BIGINT NOT NULL
);

-- Small named values created once (the audit public key). Never secret.
CREATE TABLE settings (
	name  TEXT PRIMARY KEY,
	value {{.Bytes}} NOT NULL
);
