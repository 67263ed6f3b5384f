-- fvescrow metadata schema, version 3: people, credentials, approvals,
-- operator blocks and notifications. Passwords are argon2id hashes; API
-- tokens and session IDs are stored as SHA-256 only; TOTP secrets live in
-- the secret store.

CREATE TABLE users (
	id                   {{.Key}} PRIMARY KEY,
	username             TEXT NOT NULL,
	display_name         TEXT NOT NULL DEFAULT '',
	email                TEXT NOT NULL DEFAULT '',
	source               TEXT NOT NULL,
	roles                TEXT NOT NULL DEFAULT '[]',
	groups_json          TEXT NOT NULL DEFAULT '[]',
	password_hash        TEXT NOT NULL DEFAULT '',
	totp_enabled         BOOLEAN NOT NULL DEFAULT FALSE,
	must_change_password BOOLEAN NOT NULL DEFAULT FALSE,
	disabled             BOOLEAN NOT NULL DEFAULT FALSE,
	failed_logins        INTEGER NOT NULL DEFAULT 0,
	locked_until         BIGINT,
	created_at           BIGINT NOT NULL,
	updated_at           BIGINT NOT NULL,
	last_login_at        BIGINT
);

CREATE TABLE api_tokens (
	id           {{.Key}} PRIMARY KEY,
	name         TEXT NOT NULL,
	owner        {{.Key}} NOT NULL,
	roles        TEXT NOT NULL,
	hash         {{.Bytes}} NOT NULL UNIQUE,
	created_at   BIGINT NOT NULL,
	expires_at   BIGINT,
	revoked_at   BIGINT,
	last_used_at BIGINT
);
CREATE INDEX api_tokens_owner ON api_tokens (owner);

CREATE TABLE sessions (
	id_hash      {{.Bytes}} PRIMARY KEY,
	user_id      {{.Key}} NOT NULL,
	roles        TEXT NOT NULL,
	groups_json  TEXT NOT NULL DEFAULT '[]',
	source       TEXT NOT NULL,
	csrf         TEXT NOT NULL,
	id_token     TEXT NOT NULL DEFAULT '',
	created_at   BIGINT NOT NULL,
	last_seen_at BIGINT NOT NULL,
	expires_at   BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE approvals (
	id              {{.Key}} PRIMARY KEY,
	device          {{.Key}} NOT NULL,
	requester_kind  TEXT NOT NULL,
	requester_id    TEXT NOT NULL,
	requester_name  TEXT NOT NULL DEFAULT '',
	reason          TEXT NOT NULL,
	ticket          TEXT NOT NULL,
	state           TEXT NOT NULL,
	created_at      BIGINT NOT NULL,
	expires_at      BIGINT NOT NULL,
	approver_kind   TEXT NOT NULL DEFAULT '',
	approver_id     TEXT NOT NULL DEFAULT '',
	approver_name   TEXT NOT NULL DEFAULT '',
	decided_at      BIGINT,
	decision_note   TEXT NOT NULL DEFAULT '',
	use_by          BIGINT,
	used_at         BIGINT
);
CREATE INDEX approvals_requester ON approvals (requester_id, created_at);
CREATE INDEX approvals_state ON approvals (state, created_at);

CREATE TABLE blocks (
	id         {{.AutoID}},
	actor_id   TEXT NOT NULL,
	reason     TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	until_at   BIGINT,
	lifted_at  BIGINT,
	lifted_by  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX blocks_actor ON blocks (actor_id);

CREATE TABLE notifications (
	id            {{.AutoID}},
	channel       TEXT NOT NULL,
	target        TEXT NOT NULL,
	subject       TEXT NOT NULL DEFAULT '',
	body          TEXT NOT NULL,
	audit_seq     BIGINT NOT NULL DEFAULT 0,
	state         TEXT NOT NULL,
	attempts      INTEGER NOT NULL DEFAULT 0,
	last_error    TEXT NOT NULL DEFAULT '',
	next_attempt  BIGINT NOT NULL,
	created_at    BIGINT NOT NULL,
	delivered_at  BIGINT,
	claimed_by    TEXT NOT NULL DEFAULT '',
	claimed_until BIGINT
);
CREATE INDEX notifications_due ON notifications (state, next_attempt);
