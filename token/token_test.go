package token_test

import (
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/token"
)

func TestFromUserList(t *testing.T) {
	b, err := os.ReadFile("../fde/testdata/results/userlist.plist")
	if err != nil {
		t.Fatal(err)
	}
	ul, err := fde.ParseUserList(b)
	if err != nil {
		t.Fatal(err)
	}
	as := token.FromUserList(ul)
	if len(as) != 3 || as[0].UserName != "ada" || as[1].UserName != "itadmin" || as[2].UserName != "old-macos" {
		t.Fatalf("%+v", as)
	}
	if h := token.Holders(as); len(h) != 1 || h[0].UserName != "ada" {
		t.Fatalf("holders %+v", h)
	}
}

func acct(name string, tok fde.Flag) token.Account {
	return token.Account{UserName: name, UID: 501, GUID: "G-" + name, HasSecureToken: tok, MobileAccount: fde.FlagFalse}
}

func TestDiff(t *testing.T) {
	old := []token.Account{acct("ada", fde.FlagTrue), acct("bob", fde.FlagFalse), acct("carol", fde.FlagTrue)}
	renamed := acct("carol", fde.FlagFalse)
	renamed.UID = 502
	login := acct("ada", fde.FlagTrue)
	login.IsLoggedIn = fde.FlagTrue
	new := []token.Account{login, acct("bob", fde.FlagTrue), renamed, acct("dave", fde.FlagTrue)}
	got := fmt.Sprint(token.Diff(old, new))
	want := "[bob securetoken-granted carol securetoken-lost carol updated (UID 501 → 502) dave added (holds a SecureToken)]"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if d := token.Diff(new, new); len(d) != 0 {
		t.Errorf("no change reported %v", d)
	}
	if d := token.Diff(new, new[:1]); len(d) != 3 || d[0].Kind != token.Removed {
		t.Errorf("removals %v", d)
	}
}

func codes(v token.Verdict) []string {
	var out []string
	for _, f := range v.Findings {
		out = append(out, f.Code)
	}
	return out
}

func TestAssess(t *testing.T) {
	users := []token.Account{acct("ada", fde.FlagTrue), acct("itadmin", fde.FlagTrue)}
	mobile := acct("mob", fde.FlagFalse)
	mobile.MobileAccount = fde.FlagTrue
	cases := []struct {
		name        string
		s           token.State
		recoverable bool
		codes       []string
	}{
		{"escrowed and verified", token.State{FileVault: fde.FlagTrue, HasPRK: fde.FlagTrue, PRKEscrowed: true, PRKVerified: true, BootstrapHeld: true, Accounts: users[:1]}, true, nil},
		{"predates profile", token.State{FileVault: fde.FlagTrue, HasPRK: fde.FlagTrue, Accounts: users[:1]}, false, []string{"prk-not-escrowed"}},
		{"no prk", token.State{FileVault: fde.FlagTrue, HasPRK: fde.FlagFalse}, false, []string{"no-prk"}},
		{"filevault off", token.State{FileVault: fde.FlagFalse}, true, []string{"filevault-off"}},
		{"disclosed", token.State{FileVault: fde.FlagTrue, HasPRK: fde.FlagTrue, PRKEscrowed: true, PRKDisclosed: true}, true, []string{"prk-disclosed"}},
		{"management token (seed 004)", token.State{FileVault: fde.FlagTrue, PRKEscrowed: true, Accounts: users, ManagementAccounts: []string{"ITAdmin"}}, true, []string{"management-account-token"}},
		{"nobody holds a token", token.State{FileVault: fde.FlagTrue, PRKEscrowed: true, Accounts: []token.Account{acct("x", fde.FlagFalse)}}, true, []string{"no-token-holder"}},
		{"token state unknown (old macOS)", token.State{FileVault: fde.FlagTrue, PRKEscrowed: true, Accounts: []token.Account{acct("x", fde.FlagUnknown)}}, true, nil},
		{"mobile without token", token.State{FileVault: fde.FlagTrue, PRKEscrowed: true, Accounts: []token.Account{acct("ada", fde.FlagTrue), mobile}}, true, []string{"mobile-account-without-token"}},
		{"bootstrap possible but missing", token.State{FileVault: fde.FlagTrue, PRKEscrowed: true, BootstrapAllows: "allowed"}, true, []string{"bootstrap-not-escrowed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := token.Assess(tc.s)
			if v.Recoverable != tc.recoverable || !slices.Equal(codes(v), tc.codes) {
				t.Errorf("recoverable=%v codes=%v, want %v %v", v.Recoverable, codes(v), tc.recoverable, tc.codes)
			}
			if v.Recoverable && len(v.Paths) == 0 {
				t.Error("recoverable without a path")
			}
		})
	}
}
