-- fvescrow metadata schema, version 4: key rotation. Jobs name the key
-- version they are about and their campaign; campaigns record bulk
-- rotations; key_regenerations lists devices whose key an agent must
-- regenerate because MDM cannot rotate it.

ALTER TABLE jobs ADD COLUMN campaign BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN ref BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_campaign ON jobs (campaign, state);
CREATE INDEX jobs_ref ON jobs (kind, device, ref);

-- Current, disclosed keys (the sweep and the fleet view).
CREATE INDEX key_versions_disclosed ON key_versions (kind, disclosed_at) WHERE superseded_at IS NULL;

CREATE TABLE campaigns (
	id              {{.AutoID}},
	name            TEXT NOT NULL,
	reason          TEXT NOT NULL,
	filter          TEXT NOT NULL DEFAULT '',
	created_by      TEXT NOT NULL,
	created_by_kind TEXT NOT NULL,
	created_by_name TEXT NOT NULL DEFAULT '',
	created_at      BIGINT NOT NULL,
	devices         INTEGER NOT NULL DEFAULT 0,
	skipped         INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE key_regenerations (
	device     {{.Key}} PRIMARY KEY,
	reason     TEXT NOT NULL,
	version_id BIGINT NOT NULL DEFAULT 0,
	since      BIGINT NOT NULL,
	cleared_at BIGINT
);
CREATE INDEX key_regenerations_open ON key_regenerations (since) WHERE cleared_at IS NULL;
