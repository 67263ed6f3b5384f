package escrow_test

import (
	"testing"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/cmstest"
)

// TestEarlierKeyComesBack: a Mac that reports, in a new blob, a key
// fvescrow held before (its rotation did not take) gets that key as its
// current version again, since it is the key that unlocks the Mac; and a
// key that was disclosed stays disclosed, so it counts as not rotated.
func TestEarlierKeyComesBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		if _, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk1), escrow.SourceSecurityInfo); err != nil {
			t.Fatal(err)
		}
		reveal(t, e) // v1 disclosed
		if r, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk2), escrow.SourceRotation); err != nil || r.Version.Seq != 2 {
			t.Fatalf("rotated key %+v %v", r, err)
		}
		// SecurityInfo reports the first key again, in a blob never seen.
		r, err := e.svc.Ingest(ctx, dev, cmstest.Encrypt(t, e.id.Certificate, []byte(prk1)), escrow.SourceSecurityInfo)
		if err != nil || !r.New || r.Version.Seq != 3 || !r.Version.Current() {
			t.Fatalf("earlier key again %+v %v", r, err)
		}
		if r.Version.DisclosedAt.IsZero() {
			t.Fatal("the earlier key came back undisclosed: it would count as rotated")
		}
		vs, err := e.svc.KeyVersions(ctx, dev.ID, escrow.KindPRK)
		if err != nil || len(vs) != 3 || !vs[2].Current() || vs[2].DisclosedAt.IsZero() || !vs[1].SupersededAt.Equal(vs[2].ReceivedAt) {
			t.Fatalf("versions %+v %v", vs, err)
		}
		if got := reveal(t, e); got.Key.Expose() != prk1 || got.Version.Seq != 3 {
			t.Fatalf("reveal gave version %d", got.Version.Seq)
		}

		// A key that was never disclosed comes back undisclosed.
		if _, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk2), escrow.SourceSecurityInfo); err != nil {
			t.Fatal(err)
		}
		vs, err = e.svc.KeyVersions(ctx, dev.ID, escrow.KindPRK)
		if err != nil || len(vs) != 4 || !vs[3].Current() || !vs[3].DisclosedAt.IsZero() {
			t.Fatalf("versions after prk2 again %+v %v", vs, err)
		}
	})
}
