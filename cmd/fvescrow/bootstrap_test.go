package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
)

// TestBootstrapTokenWithdrawn: Apple's check-in schema says a
// SetBootstrapToken whose BootstrapToken is missing or zero length removes
// the device's bootstrap token. fvescrow withdraws it: GetBootstrapToken
// answers empty, as for a Mac that never set one; the withdrawal is audited;
// the old version stays in the secret store; a later token is escrowed and
// served as usual.
func TestBootstrapTokenWithdrawn(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode)
			m := s.enroll(fakemac.Options{})
			id := escrow.DeviceID(m.UDID)
			get := func(what string) []byte {
				t.Helper()
				got, err := m.GetBootstrapToken(ctx)
				if err != nil {
					t.Fatalf("GetBootstrapToken %s: %v\n--- server log\n%s", what, err, s.logs.String())
				}
				return got
			}
			set := func(what string, tok []byte) {
				t.Helper()
				if err := m.SetBootstrapToken(ctx, tok); err != nil {
					t.Fatalf("SetBootstrapToken %s: %v\n--- server log\n%s", what, err, s.logs.String())
				}
			}

			boot := []byte("BOOTSTRAP-TOKEN-" + randHex(16))
			set("a token", boot)
			if got := get("after set"); !bytes.Equal(got, boot) {
				t.Fatalf("GetBootstrapToken after set: %q", got)
			}

			set("zero length", []byte{})
			if got := get("after the removal"); len(got) != 0 {
				t.Fatalf("GetBootstrapToken after the Mac removed its token: %q, want an empty answer", got)
			}

			// The withdrawal is in the audit log, as the CLI exports it.
			var withdrawn []auditJSON
			out := s.cli(append([]string{"audit", "export", "--format", "jsonl"}, s.storeArgs()...)...)
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				var r auditJSON
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					t.Fatalf("audit line %q: %v", l, err)
				}
				if r.Action == escrow.ActionTokenWithdrawn {
					withdrawn = append(withdrawn, r)
				}
			}
			if len(withdrawn) != 1 || withdrawn[0].Device != m.UDID || withdrawn[0].ActorKind != string(escrow.ActorDevice) ||
				withdrawn[0].Detail["kind"] != string(escrow.KindBootstrapToken) || withdrawn[0].Detail["version"] != "1" {
				t.Fatalf("%s records: %+v\n--- audit\n%s", escrow.ActionTokenWithdrawn, withdrawn, out)
			}

			// Nothing was deleted: the version and its secret stay.
			vs, err := s.srv.svc.KeyVersions(ctx, id, escrow.KindBootstrapToken)
			if err != nil || len(vs) != 1 || vs[0].Current() || vs[0].SupersededAt.IsZero() {
				t.Fatalf("bootstrap token versions after the removal %+v %v", vs, err)
			}
			ref := escrow.SecretRef{Kind: escrow.KindBootstrapToken, Owner: m.UDID}
			if old, _, err := s.srv.stores.secrets.Get(ctx, ref, vs[0].SecretVersion); err != nil || !bytes.Equal(old, boot) {
				t.Fatalf("the withdrawn token's secret version %d: %v", vs[0].SecretVersion, err)
			}

			// Removing again (here with the key missing) changes nothing.
			set("missing", nil)
			if got := get("after a second removal"); len(got) != 0 {
				t.Fatalf("GetBootstrapToken after a second removal: %q", got)
			}
			if recs, err := s.srv.svc.AuditRecords(ctx, escrow.AuditQuery{Device: id, Action: escrow.ActionTokenWithdrawn}); err != nil || len(recs) != 1 {
				t.Fatalf("a repeated removal was audited again: %d records, %v", len(recs), err)
			}

			// A new token later is escrowed as a new version and served.
			boot2 := []byte("BOOTSTRAP-TOKEN-" + randHex(16))
			set("a new token", boot2)
			if got := get("after a new token"); !bytes.Equal(got, boot2) {
				t.Fatalf("GetBootstrapToken after a new token: %q", got)
			}
			if vs, err = s.srv.svc.KeyVersions(ctx, id, escrow.KindBootstrapToken); err != nil || len(vs) != 2 || vs[0].Current() || !vs[1].Current() {
				t.Fatalf("versions after a new token %+v %v", vs, err)
			}
			if old, _, err := s.srv.stores.secrets.Get(ctx, ref, vs[0].SecretVersion); err != nil || !bytes.Equal(old, boot) {
				t.Errorf("the first token's secret after a new one: %v", err)
			}

			for _, secret := range [][]byte{boot, boot2} {
				assertNotInNanomdm(t, s, secret)
				if strings.Contains(s.logs.String(), string(secret)) {
					t.Error("a bootstrap token reached the log")
				}
			}
		})
	}
}
