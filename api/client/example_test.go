package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"

	"github.com/fvescrow/fvescrow/api/client"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil"
	"github.com/fvescrow/fvescrow/internal/testutil/apitest"
)

// The examples run against a real server (real stores, the real reveal
// chain) with a help desk user, a viewer, and one Mac whose key is
// escrowed.
var (
	srv      *apitest.Server
	helpdesk apitest.User
	viewer   apitest.User
	prk      string
)

var mac = escrow.Device{ID: "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", UDID: "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",
	Serial: "C02EXAMPLE01", Hostname: "ada-mbp", Platform: "macOS"}

func TestMain(m *testing.M) {
	if _, err := exec.LookPath("openssl"); err != nil {
		// Escrowing a key as a Mac does needs OpenSSL (testutil.Need).
		fmt.Fprintln(os.Stderr, "openssl is required for these tests:", err)
		if testutil.Integration() {
			os.Exit(1)
		}
		os.Exit(0)
	}
	var err error
	if srv, err = apitest.New(apitest.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer srv.Close()
		if helpdesk, err = srv.NewUser("ada", escrow.RoleHelpdesk); err == nil {
			if viewer, err = srv.NewUser("vic", escrow.RoleViewer); err == nil {
				prk, err = srv.Escrow(mac)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// A help desk operator signs in, finds a Mac by its serial number and
// reveals its recovery key with a reason and a ticket.
func Example() {
	ctx := context.Background()
	c, err := client.New(srv.URL, client.WithHTTPClient(srv.Client()))
	if err != nil {
		fmt.Println(err)
		return
	}
	login, err := c.Login(ctx, wire.LoginRequest{Username: "ada", Password: helpdesk.Password})
	if err != nil {
		fmt.Println(err)
		return
	}
	c = c.UseToken(login.Token)

	me, _ := c.Me(ctx)
	fmt.Println("signed in as", me.ID, me.Roles)

	found, _ := c.SearchDevices(ctx, client.DeviceQuery{Text: "C02EXAMPLE01"})
	for _, d := range found.Devices {
		fmt.Println(d.Serial, d.Hostname, d.Platform)
	}

	rv, err := c.Reveal(ctx, "C02EXAMPLE01", wire.RevealRequest{Reason: "user forgot the login password", Ticket: "IT-4711"})
	if err != nil {
		fmt.Println(err)
		return
	}
	// rv.Key is the recovery key: show it to the person who asked only.
	fmt.Println("key version", rv.Version, "matches:", rv.Key == prk)
	// Output:
	// signed in as local:ada [helpdesk]
	// C02EXAMPLE01 ada-mbp macOS
	// key version 1 matches: true
}

// Every refusal is an *Error with the HTTP status and a stable code.
func ExampleError() {
	ctx := context.Background()
	c, _ := client.New(srv.URL, client.WithHTTPClient(srv.Client()), client.WithToken(viewer.Token))
	_, err := c.Reveal(ctx, mac.Serial, wire.RevealRequest{Reason: "just curious about it", Ticket: "IT-1"})
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Code, e.Message)
	}

	anonymous, _ := client.New(srv.URL, client.WithHTTPClient(srv.Client()))
	_, err = anonymous.Device(ctx, mac.Serial)
	fmt.Println(client.IsCode(err, client.CodeUnauthenticated))
	// Output:
	// 403 forbidden needs key:reveal
	// true
}

// An automation token scoped to one role, then revoked.
func ExampleClient_CreateToken() {
	ctx := context.Background()
	c, _ := client.New(srv.URL, client.WithHTTPClient(srv.Client()), client.WithToken(helpdesk.Token))
	created, err := c.CreateToken(ctx, wire.TokenRequest{Name: "inventory sync", Roles: []string{"helpdesk"}, ExpiresInHours: 24})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(created.Info.Name, created.Info.Roles, created.Info.ExpiresAt != nil)

	bot := c.UseToken(created.Token)
	me, _ := bot.Me(ctx)
	fmt.Println(me.ID, me.Roles, "may reveal:", slices.Contains(me.Permissions, "key:reveal"))

	_ = c.RevokeToken(ctx, created.Info.ID)
	_, err = bot.Me(ctx)
	fmt.Println(client.IsCode(err, client.CodeUnauthenticated))
	// Output:
	// inventory sync [helpdesk] true
	// local:ada [helpdesk] may reveal: true
	// true
}
