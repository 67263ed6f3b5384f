package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
)

// TestAPIEnqueuerAgainstNanomdm: fvescrow's client of nanomdm's enqueue API,
// against a real nanomdm, queues a command; a wrong URL path (nanomdm
// answers 404) or API key is an error, never a command taken for queued.
func TestAPIEnqueuerAgainstNanomdm(t *testing.T) {
	_, n, _ := startCompanion(t, modeEmbedded)
	id := escrow.DeviceID(companionUDID())
	cmd, err := fde.NewSecurityInfo()
	if err != nil {
		t.Fatal(err)
	}
	enqueue := func(base, key string) error {
		t.Helper()
		e, err := mdm.NewAPIEnqueuer(base, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		return e.Enqueue(ctx, id, cmd)
	}
	if err := enqueue(n.api.URL+"/nanomdm", n.apiKey); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("wrong path: %v, want an error naming the 404", err)
	}
	if err := enqueue(n.api.URL, "not-the-key"); !errors.Is(err, escrow.ErrForbidden) {
		t.Fatalf("wrong key: %v, want ErrForbidden", err)
	}
	if got := n.enqueuedFor(string(id)); len(got) != 0 {
		t.Fatalf("queued by failed calls: %v", got)
	}
	if err := enqueue(n.api.URL, n.apiKey); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	if got := n.enqueuedFor(string(id)); len(got) != 1 || got[0] != fde.RequestSecurityInfo {
		t.Fatalf("nanomdm queued %v", got)
	}
}
