-- fvescrow metadata schema, version 2: what the MDM door tracks.

-- Commands fvescrow enqueued: a result names only its CommandUUID, so the
-- request type and purpose are remembered here. Never the command body.
CREATE TABLE mdm_commands (
	uuid         {{.Key}} NOT NULL,
	device       {{.Key}} NOT NULL,
	request_type TEXT NOT NULL,
	purpose      TEXT NOT NULL DEFAULT '',
	job_id       BIGINT NOT NULL DEFAULT 0,
	enqueued_at  BIGINT NOT NULL,
	status       TEXT NOT NULL DEFAULT '',
	answered_at  BIGINT,
	error        TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (device, uuid)
);
CREATE INDEX mdm_commands_device ON mdm_commands (device, enqueued_at);

-- Scheduled work per device. At most one open (pending or waiting) job per
-- kind and device; claims are leases.
CREATE TABLE jobs (
	id            {{.AutoID}},
	kind          TEXT NOT NULL,
	device        {{.Key}} NOT NULL,
	state         TEXT NOT NULL,
	step          TEXT NOT NULL DEFAULT '',
	run_at        BIGINT NOT NULL,
	attempts      INTEGER NOT NULL DEFAULT 0,
	error         TEXT NOT NULL DEFAULT '',
	data          TEXT NOT NULL DEFAULT '{}',
	created_at    BIGINT NOT NULL,
	updated_at    BIGINT NOT NULL,
	claimed_by    TEXT NOT NULL DEFAULT '',
	claimed_until BIGINT
);
CREATE UNIQUE INDEX jobs_open ON jobs (kind, device) WHERE state IN ('pending', 'waiting');
CREATE INDEX jobs_due ON jobs (kind, run_at) WHERE state IN ('pending', 'waiting');
CREATE INDEX jobs_device ON jobs (device, id);

-- The local accounts of each device as its last UserList reported them,
-- and every change since.
CREATE TABLE device_accounts (
	device        {{.Key}} NOT NULL,
	user_name     TEXT NOT NULL,
	full_name     TEXT NOT NULL DEFAULT '',
	uid           BIGINT NOT NULL DEFAULT -1,
	guid          TEXT NOT NULL DEFAULT '',
	secure_token  INTEGER NOT NULL DEFAULT 0, -- fde.Flag: 0 unknown, 1 false, 2 true
	mobile        INTEGER NOT NULL DEFAULT 0,
	logged_in     INTEGER NOT NULL DEFAULT 0,
	reported_at   BIGINT NOT NULL,
	PRIMARY KEY (device, user_name)
);
CREATE TABLE device_account_reports (
	device      {{.Key}} PRIMARY KEY,
	reported_at BIGINT NOT NULL
);
CREATE TABLE device_account_changes (
	id        {{.AutoID}},
	device    {{.Key}} NOT NULL,
	user_name TEXT NOT NULL,
	kind      TEXT NOT NULL,
	detail    TEXT NOT NULL DEFAULT '',
	at        BIGINT NOT NULL
);
CREATE INDEX device_account_changes_device ON device_account_changes (device, id);

-- Webhook events already processed (replays are no-ops).
CREATE TABLE webhook_events (
	id    {{.Key}} PRIMARY KEY,
	at    BIGINT NOT NULL
);
