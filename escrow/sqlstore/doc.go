// Package sqlstore is the escrow.MetaStore on SQL databases: SQLite (the
// embedded default, pure Go through modernc.org/sqlite) and PostgreSQL
// (production, through pgx's database/sql driver).
//
// Both databases share one schema and one set of queries. The schema lives in
// embedded, versioned migrations (migrations/*.sql) that OpenSQLite and
// OpenPostgres apply before returning; a tiny template fills in the few type
// names that differ ({{.AutoID}}, {{.Bytes}}, {{.Key}}). Queries are written
// once with ? placeholders and rebound to $n for PostgreSQL.
//
// Every time is stored as BIGINT microseconds since the Unix epoch, UTC, so
// what escrow.AuditTime produces round-trips exactly in both databases.
//
// # Concurrency
//
// Writes run in transactions that serialise where the escrow semantics need
// it. On SQLite every write transaction is BEGIN IMMEDIATE (the database has a
// single writer; a busy timeout covers other processes, and an in-process
// semaphore spares this process SQLite's sleep-and-retry loop). On PostgreSQL
// a key record locks its device row, so records for one device run one at a
// time, and every audit append takes a transaction-scoped advisory lock, so
// the hash chain grows one record at a time. The audit lock is always the
// last lock a transaction takes, which keeps lock order acyclic.
//
// The tables hold metadata only: no recovery key, token or private key is ever
// stored here. CMS blobs are stored as received, encrypted to an escrow
// certificate.
package sqlstore
