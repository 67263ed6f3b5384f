package escrow_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/escrow"
)

// TestWithdrawToken: a withdrawn token is no longer served, the withdrawal
// is audited once, nothing is deleted (the versions and their secrets stay),
// and a token sent later is escrowed as a new version, on both backends.
func TestWithdrawToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		device := escrow.Actor{Kind: escrow.ActorDevice, ID: string(dev.ID)}
		ref := escrow.SecretRef{Kind: escrow.KindBootstrapToken, Owner: string(dev.ID)}
		withdrawals := func() []escrow.AuditRecord {
			t.Helper()
			recs, err := e.svc.AuditRecords(ctx, escrow.AuditQuery{Device: dev.ID, Action: escrow.ActionTokenWithdrawn})
			if err != nil {
				t.Fatal(err)
			}
			return recs
		}
		withdraw := func(want bool) {
			t.Helper()
			if ok, err := e.svc.WithdrawToken(ctx, device, dev.ID, escrow.KindBootstrapToken); err != nil || ok != want {
				t.Fatalf("WithdrawToken: withdrew %v (want %v), %v", ok, want, err)
			}
		}
		served := func() []byte {
			t.Helper()
			tok, err := e.svc.Token(ctx, device, dev.ID, escrow.KindBootstrapToken)
			if errors.Is(err, escrow.ErrNotFound) {
				return nil
			} else if err != nil {
				t.Fatal(err)
			}
			return tok
		}

		// Nothing escrowed: nothing to withdraw, nothing audited.
		withdraw(false)
		if recs := withdrawals(); len(recs) != 0 {
			t.Fatalf("a no-op withdrawal was audited: %+v", recs)
		}

		tok1 := []byte("BOOTSTRAP-TOKEN-one")
		unlock := []byte("UNLOCK-TOKEN")
		if _, err := e.svc.PutToken(ctx, dev, escrow.KindBootstrapToken, tok1, escrow.SourceCheckin); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.PutToken(ctx, dev, escrow.KindUnlockToken, unlock, escrow.SourceCheckin); err != nil {
			t.Fatal(err)
		}
		if got := served(); !bytes.Equal(got, tok1) {
			t.Fatalf("served %q before the withdrawal", got)
		}

		withdraw(true)
		if got := served(); got != nil {
			t.Fatalf("a withdrawn token is still served: %q", got)
		}
		recs := withdrawals()
		if len(recs) != 1 || recs[0].Actor != device || recs[0].Detail["kind"] != string(escrow.KindBootstrapToken) ||
			recs[0].Detail["version"] != "1" || recs[0].Detail["secret_version"] != "1" {
			t.Fatalf("audit of the withdrawal: %+v", recs)
		}
		vs, err := e.svc.KeyVersions(ctx, dev.ID, escrow.KindBootstrapToken)
		if err != nil || len(vs) != 1 || vs[0].Current() || !vs[0].SupersededAt.Equal(recs[0].Time) {
			t.Fatalf("versions after the withdrawal %+v %v", vs, err)
		}
		// Kept: the secret, still the latest in the secret store.
		if got, v, err := e.secrets.Get(ctx, ref, 0); err != nil || v != 1 || !bytes.Equal(got, tok1) {
			t.Fatalf("secret after the withdrawal: version %d, %v", v, err)
		}
		// Other kinds are untouched.
		if u, err := e.svc.Token(ctx, escrow.System, dev.ID, escrow.KindUnlockToken); err != nil || !bytes.Equal(u, unlock) {
			t.Errorf("unlock token after a bootstrap withdrawal: %v", err)
		}

		// Again: idempotent, no audit noise.
		withdraw(false)
		if recs := withdrawals(); len(recs) != 1 {
			t.Fatalf("%d withdrawal records after a repeat, want 1", len(recs))
		}

		// The same token sent again is escrowed anew: a new version, served.
		r, err := e.svc.PutToken(ctx, dev, escrow.KindBootstrapToken, tok1, escrow.SourceCheckin)
		if err != nil || !r.New || r.Version.Seq != 2 || r.Version.SecretVersion != 2 {
			t.Fatalf("token after the withdrawal %+v %v", r, err)
		}
		if got := served(); !bytes.Equal(got, tok1) {
			t.Fatalf("served %q after a new token", got)
		}
		tok2 := []byte("BOOTSTRAP-TOKEN-two")
		if _, err := e.svc.PutToken(ctx, dev, escrow.KindBootstrapToken, tok2, escrow.SourceCheckin); err != nil {
			t.Fatal(err)
		}
		withdraw(true)
		if got := served(); got != nil {
			t.Fatalf("served %q after the second withdrawal", got)
		}
		if recs := withdrawals(); len(recs) != 2 || recs[1].Detail["version"] != "3" || recs[1].Detail["secret_version"] != "3" {
			t.Fatalf("audit of the second withdrawal %+v", recs)
		}
		// Every version stays, each secret readable.
		vs, err = e.svc.KeyVersions(ctx, dev.ID, escrow.KindBootstrapToken)
		if err != nil || len(vs) != 3 {
			t.Fatalf("versions %+v %v", vs, err)
		}
		for i, want := range [][]byte{tok1, tok1, tok2} {
			if vs[i].Current() {
				t.Errorf("version %d current", vs[i].Seq)
			}
			if got, _, err := e.secrets.Get(ctx, ref, vs[i].SecretVersion); err != nil || !bytes.Equal(got, want) {
				t.Errorf("secret of version %d: %v", vs[i].Seq, err)
			}
		}

		if _, err := e.svc.WithdrawToken(ctx, device, dev.ID, escrow.KindPRK); !errors.Is(err, escrow.ErrInvalid) {
			t.Errorf("PRK through WithdrawToken: %v", err)
		}
		if _, err := e.svc.WithdrawToken(ctx, device, "../x", escrow.KindBootstrapToken); !errors.Is(err, escrow.ErrInvalid) {
			t.Errorf("bad device ID: %v", err)
		}
		if rep, err := escrow.VerifyAudit(ctx, e.meta, nil); err != nil || rep.Broken != nil {
			t.Errorf("audit verify %+v %v", rep, err)
		}
		for _, s := range []string{string(tok1), string(tok2), string(unlock)} {
			if strings.Contains(e.logs.String(), s) {
				t.Errorf("a token reached the log")
			}
		}
	})
}
