package escrow

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/fde"
)

// ExportRecord is one secret in a break-glass export. Data is secret; the
// caller encrypts the export stream before it touches a disk.
type ExportRecord struct {
	Kind        SecretKind `json:"kind"`
	Device      DeviceID   `json:"device,omitempty"`
	Serial      string     `json:"serial,omitempty"`
	Version     int        `json:"version,omitempty"`
	Fingerprint string     `json:"fingerprint,omitempty"`
	ReceivedAt  time.Time  `json:"received_at,omitempty"`
	Data        string     `json:"data"` // recovery key text, or PEM for escrow keys
}

// String never prints Data.
func (r ExportRecord) String() string {
	return fmt.Sprintf("%s %s%s v%d", r.Kind, r.Device, r.Fingerprint, r.Version)
}

// Export streams every device's current recovery key and every escrow
// private key to emit, after auditing the export. recipients describes where
// the export goes (age recipients) for the audit record.
func (s *Service) Export(ctx context.Context, actor Actor, recipients []string, emit func(ExportRecord) error) (int, error) {
	if _, err := s.meta.AppendAudit(ctx, Event{Time: s.now(), Actor: actor, Action: ActionExportCreated,
		Reason: "break-glass export", Detail: map[string]string{"recipients": strings.Join(recipients, " ")}}); err != nil {
		return 0, fmt.Errorf("export: audit: %w", err)
	}
	n := 0
	certs, err := s.meta.EscrowCerts(ctx)
	if err != nil {
		return n, err
	}
	for _, c := range certs {
		key, _, err := s.secrets.Get(ctx, SecretRef{Kind: KindEscrowKey, Owner: c.Fingerprint}, 0)
		if err != nil {
			return n, fmt.Errorf("export: escrow key %s: %w", c.Fingerprint, err)
		}
		rec := ExportRecord{Kind: KindEscrowKey, Fingerprint: c.Fingerprint, ReceivedAt: c.AddedAt,
			Data: string(fde.EncodeCertificatePEM(c.Certificate)) + string(key)}
		clear(key)
		if err := emit(rec); err != nil {
			return n, err
		}
		n++
	}
	var after DeviceID
	for {
		devs, err := s.meta.FindDevices(ctx, DeviceQuery{IncludeRetired: true, Limit: 500, AfterID: after})
		if err != nil {
			return n, err
		}
		if len(devs) == 0 {
			return n, nil
		}
		for _, d := range devs {
			after = d.ID
			versions, err := s.meta.KeyVersions(ctx, d.ID, KindPRK)
			if err != nil {
				return n, err
			}
			cur, ok := current(versions)
			if !ok {
				continue
			}
			key, _, err := s.secrets.Get(ctx, SecretRef{Kind: KindPRK, Owner: string(d.ID)}, cur.SecretVersion)
			if err != nil {
				return n, fmt.Errorf("export: %s: %w", d.ID, err)
			}
			rec := ExportRecord{Kind: KindPRK, Device: d.ID, Serial: d.Serial, Version: cur.Seq, ReceivedAt: cur.ReceivedAt, Data: string(key)}
			clear(key)
			if err := emit(rec); err != nil {
				return n, err
			}
			n++
		}
	}
}
