package sqlstore

import "testing"

func TestRebind(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`SELECT 1`, `SELECT 1`},
		{`a = ? AND b = ?`, `a = $1 AND b = $2`},
		{`x = '?' AND y = ? AND "q?" = ?`, `x = '?' AND y = $1 AND "q?" = $2`},
		{`x = 'it''s ?' AND y = ?`, `x = 'it''s ?' AND y = $1`},
	} {
		if got := Postgres.Rebind(tc.in); got != tc.want {
			t.Errorf("Rebind(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := SQLite.Rebind(tc.in); got != tc.in {
			t.Errorf("SQLite rebind changed %q", tc.in)
		}
	}
}

func TestContainsPattern(t *testing.T) {
	for in, want := range map[string]string{
		"abc": "%abc%",
		"%":   "%!%%",
		"a_b": "%a!_b%",
		"x!y": "%x!!y%",
		`a\b`: `%a\b%`,
		"":    "%%",
	} {
		if got := containsPattern(in); got != want {
			t.Errorf("containsPattern(%q) = %q, want %q", in, got, want)
		}
	}
}
