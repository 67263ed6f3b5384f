package wire

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// AuditWriter writes audit records as JSON lines or CSV, for SIEMs.
type AuditWriter struct {
	json *json.Encoder
	csv  *csv.Writer
	head bool
}

// NewAuditWriter writes format "jsonl" or "csv" to w.
func NewAuditWriter(w io.Writer, format string) (*AuditWriter, error) {
	switch format {
	case "jsonl", "":
		return &AuditWriter{json: json.NewEncoder(w)}, nil
	case "csv":
		return &AuditWriter{csv: csv.NewWriter(w)}, nil
	}
	return nil, fmt.Errorf("%w: format %q: want jsonl or csv", ErrInvalid, format)
}

// Write writes one record.
func (a *AuditWriter) Write(r AuditRecord) error {
	if a.json != nil {
		return a.json.Encode(r)
	}
	if !a.head {
		a.head = true
		if err := a.csv.Write([]string{"seq", "time", "actor_kind", "actor_id", "actor_name", "action", "device", "reason", "ticket", "detail", "prev_hash", "hash"}); err != nil {
			return err
		}
	}
	detail, _ := json.Marshal(r.Detail)
	return a.csv.Write([]string{fmt.Sprint(r.Seq), r.Time.Format(time.RFC3339Nano), r.ActorKind, csvSafe(r.ActorID), csvSafe(r.ActorName),
		r.Action, csvSafe(r.Device), csvSafe(r.Reason), csvSafe(r.Ticket), string(detail), r.PrevHash, r.Hash})
}

// Flush finishes CSV output.
func (a *AuditWriter) Flush() error {
	if a.csv != nil {
		a.csv.Flush()
		return a.csv.Error()
	}
	return nil
}

// csvSafe defuses spreadsheet formula injection in text people typed (a
// reason starting with = runs as a formula in Excel).
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
