package sqlstore

import (
	"strconv"
	"strings"
)

// Dialect names the SQL database behind a Store.
type Dialect string

const (
	SQLite   Dialect = "sqlite"   // modernc.org/sqlite
	Postgres Dialect = "postgres" // pgx
)

// Rebind rewrites the ? placeholders of q into the dialect's form: $1, $2...
// for PostgreSQL, unchanged for SQLite. Question marks inside quoted strings
// or identifiers are left alone; comments are not parsed, so keep ? out of
// them.
func (d Dialect) Rebind(q string) string {
	if d != Postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	var quote byte // the quote we are inside, or 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0 // a doubled quote closes and reopens: same result
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// schemaTypes are the few words the migrations' templates fill in per dialect.
type schemaTypes struct {
	AutoID string // a 64-bit primary key the database assigns, never reused
	Bytes  string // binary data
	Key    string // text compared and ordered byte by byte, for IDs
}

func (d Dialect) types() schemaTypes {
	if d == Postgres {
		// COLLATE "C" orders IDs bytewise, as SQLite does, so paging by ID
		// gives the same order on both.
		return schemaTypes{AutoID: "BIGSERIAL PRIMARY KEY", Bytes: "BYTEA", Key: `TEXT COLLATE "C"`}
	}
	// AUTOINCREMENT: an outbox ID is never reused after its row is deleted,
	// so a stale lease can never touch a newer item.
	return schemaTypes{AutoID: "INTEGER PRIMARY KEY AUTOINCREMENT", Bytes: "BLOB", Key: "TEXT"}
}

// like is the case-insensitive LIKE operator. SQLite's LIKE already ignores
// ASCII case.
func (d Dialect) like() string {
	if d == Postgres {
		return "ILIKE"
	}
	return "LIKE"
}

// forUpdate locks the selected rows until commit on PostgreSQL. SQLite has
// no row locks: its write transactions are already exclusive.
func (d Dialect) forUpdate() string {
	if d == Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// skipLocked is forUpdate for queue claims: rows another replica is
// claiming right now are skipped instead of waited for.
func (d Dialect) skipLocked() string {
	if d == Postgres {
		return " FOR UPDATE SKIP LOCKED"
	}
	return ""
}

// likeEscape is the escape character of every LIKE pattern built by
// containsPattern. It is not a backslash so the literal means the same with
// any PostgreSQL standard_conforming_strings setting.
const likeEscape = "!"

// containsPattern is a LIKE pattern matching s anywhere, with s's own
// wildcards escaped so they match themselves.
func containsPattern(s string) string {
	r := strings.NewReplacer(likeEscape, likeEscape+likeEscape, "%", likeEscape+"%", "_", likeEscape+"_")
	return "%" + r.Replace(s) + "%"
}
