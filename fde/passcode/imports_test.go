package passcode

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/internal/testutil"
)

// TestEvaluatorImportsNoIO checks issue 7's "pure Go in fde/ (or a
// sub-package), no I/O, no cgo" on what the evaluator packages
// (fde/passcode and everything under it) actually link, as `go list -deps`
// reports it, for the native build and for GOOS=js GOARCH=wasm (the portal).
//
// What is honest to claim, and so what is checked:
//
//   - The evaluator packages themselves import none of os, os/exec, net,
//     net/http, syscall, os/signal, plugin, unsafe or "C": their own code
//     can do no I/O. No exception.
//   - os/exec, net, net/http, os/signal, plugin, runtime/cgo and "C" (cgo)
//     appear nowhere in what they link, whoever imports them, unless an
//     entry of importExceptions says which package brings one in and why;
//     the test checks that it comes in only through that package.
//   - os and syscall cannot be kept out: the standard library's fmt, time,
//     log/slog and others import them (fmt.Printf writes to os.Stdout).
//     Linking them is not doing I/O, so they are allowed when only the
//     standard library imports them. A non-standard package that imports
//     them itself must be listed in importExceptions.
//
// Every chain by which a checked package comes in is logged, allowed or
// not, so a reader of the test output sees exactly what the evaluator
// links.
func TestEvaluatorImportsNoIO(t *testing.T) {
	goBin := testutil.LookPath(t, "go")
	roots := strings.Fields(goList(t, goBin, nil, "-f", "{{.ImportPath}}", "./..."))
	if len(roots) < 3 {
		t.Fatalf("go list ./... found %v; expected fde/passcode, pwpolicy and icuregex", roots)
	}
	used := map[int]bool{}
	for _, env := range [][]string{nil, {"GOOS=js", "GOARCH=wasm"}} {
		name := "native"
		if env != nil {
			name = strings.Join(env, " ")
		}
		t.Run(name, func(t *testing.T) {
			g := loadGraph(t, goBin, env)
			for _, root := range roots {
				checkRoot(t, g, root, used)
			}
		})
	}
	for i, e := range importExceptions {
		// The cgo entries apply only to native builds with cgo enabled.
		if !used[i] && e.pkg != "C" && e.pkg != "runtime/cgo" {
			t.Errorf("importExceptions entry %s via %s no longer applies; remove it", e.pkg, e.via)
		}
	}
}

// never lists what the evaluator must not link at all.
var never = []string{"os/exec", "net", "net/http", "os/signal", "plugin", "runtime/cgo", "C"}

// onlyStd lists what the standard library brings in for its own use.
var onlyStd = []string{"os", "syscall"}

// notDirect lists what the evaluator packages' own code must not import.
var notDirect = []string{"os", "os/exec", "net", "net/http", "syscall", "os/signal", "plugin", "unsafe", "C"}

// importExceptions are the known ways a checked package comes in, each
// with its reason. root "" means any evaluator package.
var importExceptions = []struct{ root, pkg, via, why string }{
	// regexp2's parser dumps its syntax tree to os.Stdout under its
	// Debug option, set by RegexOptions.Debug or an inline (?d). icuregex
	// compiles with regexp2.None and never emits an inline option (it
	// applies ICU's flags itself; TestTranslationHasNoInlineOptions).
	{"", "os", "github.com/dlclark/regexp2/syntax", "regexp2's Debug dump to stdout, never enabled by icuregex"},
	// fde/passcode's NewProfile (profile.go) wraps the payload with
	// fde.ProfileBuilder, and fde links crypto/x509 and smallstep/pkcs7,
	// which import net for IP addresses in certificates; net in turn links
	// the cgo DNS resolver (runtime/cgo, "C") in native builds with cgo
	// enabled. No evaluator code reaches them, but they are linked: moving
	// NewProfile (or ProfileBuilder) out of the evaluator's import graph
	// would remove this exception. pwpolicy and icuregex have none of it.
	{"github.com/fvescrow/fvescrow/fde/passcode", "net", "github.com/fvescrow/fvescrow/fde", "certificate code in fde (crypto/x509, pkcs7) imports net"},
	{"github.com/fvescrow/fvescrow/fde/passcode", "runtime/cgo", "github.com/fvescrow/fvescrow/fde", "net's cgo DNS resolver, native cgo builds only"},
	{"github.com/fvescrow/fvescrow/fde/passcode", "C", "github.com/fvescrow/fvescrow/fde", "net's cgo DNS resolver, native cgo builds only"},
}

type pkgNode struct {
	std     bool
	imports []string
}

type graph map[string]*pkgNode

func goList(t *testing.T, goBin string, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, append([]string{"list"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s (%v): %v\n%s", strings.Join(args, " "), env, err, stderr.Bytes())
	}
	return string(out)
}

// loadGraph reads the import graph of ./... and its dependencies. "C" is a
// node of its own (cgo), imported by every package with cgo files; it
// imports runtime/cgo, which the go command adds for them.
func loadGraph(t *testing.T, goBin string, env []string) graph {
	t.Helper()
	out := goList(t, goBin, env, "-deps", "-f", "{{.ImportPath}}\t{{.Standard}}\t{{join .Imports \" \"}}\t{{len .CgoFiles}}", "./...")
	g := graph{"C": {std: true}}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			t.Fatalf("go list line %q", line)
		}
		n := &pkgNode{std: f[1] == "true", imports: strings.Fields(f[2])}
		if f[3] != "0" && !slices.Contains(n.imports, "C") {
			n.imports = append(n.imports, "C")
		}
		g[f[0]] = n
	}
	if _, ok := g["runtime/cgo"]; ok {
		g["C"].imports = []string{"runtime/cgo"}
	}
	return g
}

// chain returns the shortest import chain from root to pkg that avoids
// the packages in skip, or nil.
func (g graph) chain(root, pkg string, skip ...string) []string {
	prev := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == pkg {
			var c []string
			for ; p != ""; p = prev[p] {
				c = append(c, p)
			}
			slices.Reverse(c)
			return c
		}
		if n := g[p]; n != nil {
			for _, q := range n.imports {
				if _, seen := prev[q]; !seen && !slices.Contains(skip, q) {
					prev[q] = p
					queue = append(queue, q)
				}
			}
		}
	}
	return nil
}

func checkRoot(t *testing.T, g graph, root string, used map[int]bool) {
	short := strings.TrimPrefix(root, "github.com/fvescrow/fvescrow/")
	for _, imp := range g[root].imports {
		if slices.Contains(notDirect, imp) {
			t.Errorf("%s imports %s itself: the evaluator's own code must do no I/O", short, imp)
		}
	}
	exception := func(pkg, via string) string {
		for i, e := range importExceptions {
			if (e.root == "" || e.root == root) && e.pkg == pkg && e.via == via {
				used[i] = true
				return e.why
			}
		}
		return ""
	}
	for _, pkg := range never {
		c := g.chain(root, pkg)
		if c == nil {
			continue
		}
		// Allowed only if an exception names a package on the way without
		// which pkg would not come in at all.
		allowed := false
		for _, via := range c[1 : len(c)-1] {
			if why := exception(pkg, via); why != "" && g.chain(root, pkg, via) == nil {
				t.Logf("%s links %s, allowed (%s): %s", short, pkg, why, strings.Join(c, " → "))
				allowed = true
				break
			}
		}
		if !allowed {
			t.Errorf("%s links %s: %s", short, pkg, strings.Join(c, " → "))
		}
	}
	for _, pkg := range onlyStd {
		if g.chain(root, pkg) == nil {
			continue
		}
		var direct []string // non-standard packages importing pkg themselves
		for p, n := range g {
			if !n.std && slices.Contains(n.imports, pkg) && g.chain(root, p) != nil {
				direct = append(direct, p)
			}
		}
		slices.Sort(direct)
		for _, p := range direct {
			pc := append(g.chain(root, p), pkg)
			if why := exception(pkg, p); why != "" {
				t.Logf("%s links %s, imported by %s, allowed (%s): %s", short, pkg, p, why, strings.Join(pc, " → "))
				continue
			}
			t.Errorf("%s links %s, imported by the non-standard package %s: %s", short, pkg, p, strings.Join(pc, " → "))
		}
		if c := g.chain(root, pkg, direct...); c != nil {
			t.Logf("%s links %s through the standard library, allowed: %s", short, pkg, strings.Join(c, " → "))
		}
	}
}
