package api_test

import (
	"net/http"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/internal/testutil/apitest"
	"gopkg.in/yaml.v3"
)

// openAPI is the part of an OpenAPI 3.1 document the checks read.
type openAPI struct {
	OpenAPI    string                          `yaml:"openapi"`
	Security   []map[string][]string           `yaml:"security"`
	Paths      map[string]map[string]yaml.Node `yaml:"paths"`
	Components struct {
		SecuritySchemes map[string]struct {
			Type   string `yaml:"type"`
			Scheme string `yaml:"scheme"`
			In     string `yaml:"in"`
			Name   string `yaml:"name"`
		} `yaml:"securitySchemes"`
		Responses map[string]struct {
			Content map[string]struct {
				Schema schema `yaml:"schema"`
			} `yaml:"content"`
		} `yaml:"responses"`
		Schemas map[string]schema `yaml:"schemas"`
	} `yaml:"components"`
}

type operation struct {
	Permission  string                 `yaml:"x-fvescrow-permission"`
	OperationID string                 `yaml:"operationId"`
	Security    *[]map[string][]string `yaml:"security"`
	Responses   map[string]struct {
		Ref string `yaml:"$ref"`
	} `yaml:"responses"`
}

type schema struct {
	Ref        string            `yaml:"$ref"`
	GoType     string            `yaml:"x-go-type"`
	Type       string            `yaml:"type"`
	Format     string            `yaml:"format"`
	Items      *schema           `yaml:"items"`
	Properties map[string]schema `yaml:"properties"`
	Required   []string          `yaml:"required"`
}

func loadOpenAPI(t *testing.T) openAPI {
	t.Helper()
	b, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPI
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	return doc
}

// operations lists "METHOD /path" → operation; path-level parameters are
// not operations.
func (d openAPI) operations(t *testing.T) map[string]operation {
	t.Helper()
	out := map[string]operation{}
	for path, item := range d.Paths {
		for method, node := range item {
			if method == "parameters" {
				continue
			}
			var op operation
			if err := node.Decode(&op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			out[strings.ToUpper(method)+" "+path] = op
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestOpenAPIMatchesRouter: the document's operations are exactly the
// /api/v1 routes of the live router and of the policy table, each with the
// permission the policy enforces and the security that follows from it.
func TestOpenAPIMatchesRouter(t *testing.T) {
	doc := loadOpenAPI(t)
	ops := doc.operations(t)
	s := apitest.Start(t, apitest.Options{})

	live := map[string]bool{}
	for _, r := range walkRoutes(t, s.Handler) {
		if strings.HasPrefix(r.pattern, "/api/v1/") {
			live[r.String()] = true
		}
	}
	declared := map[string]bool{}
	for k := range s.Policy { // the enforced table, with the optional rotation routes
		if _, pattern, _ := strings.Cut(k, " "); strings.HasPrefix(pattern, "/api/v1/") {
			declared[k] = true
		}
	}
	documented := map[string]bool{}
	for k := range ops {
		documented[k] = true
	}
	if got, want := sortedKeys(documented), sortedKeys(live); !slices.Equal(got, want) {
		t.Errorf("documented operations differ from the live router:\ndocumented %q\nlive       %q", got, want)
	}
	if got, want := sortedKeys(documented), sortedKeys(declared); !slices.Equal(got, want) {
		t.Errorf("documented operations differ from the policy table:\ndocumented %q\npolicy     %q", got, want)
	}

	ids := map[string]string{}
	for key, op := range ops {
		access, ok := s.Policy[key]
		if !ok {
			continue // reported above
		}
		if op.Permission != access.String() {
			t.Errorf("%s: x-fvescrow-permission %q, the policy enforces %q", key, op.Permission, access.String())
		}
		if op.OperationID == "" {
			t.Errorf("%s: no operationId", key)
		} else if prev, dup := ids[op.OperationID]; dup {
			t.Errorf("%s: operationId %q already used by %s", key, op.OperationID, prev)
		}
		ids[op.OperationID] = key
		public := access.Public
		if public != (op.Security != nil && len(*op.Security) == 0) {
			t.Errorf("%s: a public operation has `security: []`, and only it", key)
		}
		var has2xx bool
		for code, resp := range op.Responses {
			if strings.HasPrefix(code, "2") {
				has2xx = true
				continue
			}
			name := strings.TrimPrefix(resp.Ref, "#/components/responses/")
			if _, ok := doc.Components.Responses[name]; resp.Ref == "" || !ok {
				t.Errorf("%s: response %s is not one of the shared error responses", key, code)
			}
		}
		if !has2xx {
			t.Errorf("%s: no success response", key)
		}
		if !public {
			for _, code := range []string{"401", "403"} {
				if _, ok := op.Responses[code]; !ok {
					t.Errorf("%s: needs credentials but documents no %s", key, code)
				}
			}
		}
	}
}

// TestOpenAPIErrorsAndSecurity: every error response is the one error
// format, and the security schemes are the server's (bearer tokens, the
// session cookie, the CSRF header).
func TestOpenAPIErrorsAndSecurity(t *testing.T) {
	doc := loadOpenAPI(t)
	if len(doc.Components.Responses) == 0 {
		t.Fatal("no shared error responses")
	}
	for name, r := range doc.Components.Responses {
		if got := r.Content["application/json"].Schema.Ref; got != "#/components/schemas/Error" {
			t.Errorf("response %s: schema %q, want the Error schema", name, got)
		}
	}
	ss := doc.Components.SecuritySchemes
	if b := ss["bearer"]; b.Type != "http" || b.Scheme != "bearer" {
		t.Errorf("bearer scheme %+v", b)
	}
	if c := ss["session"]; c.Type != "apiKey" || c.In != "cookie" || c.Name != "__Host-fvescrow" {
		t.Errorf("session scheme %+v", c)
	}
	if c := ss["csrf"]; c.Type != "apiKey" || c.In != "header" || c.Name != "X-CSRF-Token" {
		t.Errorf("csrf scheme %+v", c)
	}
	want := []map[string][]string{{"bearer": {}}, {"session": {}, "csrf": {}}}
	if !reflect.DeepEqual(doc.Security, want) {
		t.Errorf("default security %v, want %v", doc.Security, want)
	}
}

// wireTypes are the api/wire types the document must describe.
var wireTypes = map[string]reflect.Type{}

func init() {
	for _, v := range []any{wire.Error{}, wire.ErrorDetail{}, wire.LoginRequest{}, wire.LoginResponse{}, wire.Me{}, wire.Device{},
		wire.DeviceList{}, wire.KeyVersion{}, wire.Account{}, wire.Finding{}, wire.Job{}, wire.DeviceDetail{}, wire.RevealRequest{},
		wire.RevealResponse{}, wire.ApprovalRequest{}, wire.Decision{}, wire.Approval{}, wire.AuditRecord{}, wire.AuditList{},
		wire.TokenRequest{}, wire.Token{}, wire.TokenCreated{}, wire.UserRequest{}, wire.User{}, wire.UserCreated{}, wire.UserUpdate{},
		wire.Notification{}, wire.Rotation{}, wire.RotationList{}, wire.RotateRequest{}, wire.OverdueKey{}, wire.OverdueList{},
		wire.CampaignRequest{}, wire.Campaign{}, wire.CampaignList{}, wire.Regeneration{}, wire.RegenerationList{}} {
		t := reflect.TypeOf(v)
		wireTypes["wire."+t.Name()] = t
	}
}

// jsonType is the JSON Schema type of a Go field, and the component a
// struct refers to.
func jsonType(t reflect.Type) (typ, ref string) {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeOf(time.Time{}) {
		return "string", ""
	}
	switch t.Kind() {
	case reflect.String:
		return "string", ""
	case reflect.Bool:
		return "boolean", ""
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "integer", ""
	case reflect.Float64:
		return "number", ""
	case reflect.Slice:
		return "array", ""
	case reflect.Map:
		return "object", ""
	case reflect.Struct:
		return "", "#/components/schemas/" + t.Name()
	}
	return "?" + t.Kind().String(), ""
}

// TestOpenAPISchemasMatchWire: each schema naming an api/wire type has its
// JSON fields, each of the right type; fields the server always sends (no
// omitempty) are required; every wire type is documented.
func TestOpenAPISchemasMatchWire(t *testing.T) {
	doc := loadOpenAPI(t)
	seen := map[string]bool{}
	for name, sc := range doc.Components.Schemas {
		if sc.GoType == "" {
			continue
		}
		gt, ok := wireTypes[sc.GoType]
		if !ok {
			t.Errorf("schema %s: unknown x-go-type %q", name, sc.GoType)
			continue
		}
		seen[sc.GoType] = true
		fields := map[string]reflect.StructField{}
		for i := 0; i < gt.NumField(); i++ {
			f := gt.Field(i)
			tag, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "" || tag == "-" {
				t.Errorf("%s.%s has no JSON name", sc.GoType, f.Name)
				continue
			}
			fields[tag] = f
			if !strings.Contains(opts, "omitempty") && !slices.Contains(sc.Required, tag) && isResponse(sc.GoType) {
				t.Errorf("schema %s: %s is always sent but not required", name, tag)
			}
		}
		if got, want := sortedKeys(sc.Properties), sortedKeys(fields); !slices.Equal(got, want) {
			t.Errorf("schema %s: properties %q, %s has %q", name, got, sc.GoType, want)
			continue
		}
		for prop, p := range sc.Properties {
			typ, ref := jsonType(fields[prop].Type)
			switch {
			case ref != "" && p.Ref != ref:
				t.Errorf("schema %s.%s: $ref %q, want %q", name, prop, p.Ref, ref)
			case ref == "" && p.Type != typ:
				t.Errorf("schema %s.%s: type %q, the Go field is %q", name, prop, p.Type, typ)
			case fields[prop].Type == reflect.TypeOf(time.Time{}) || fields[prop].Type == reflect.TypeOf(&time.Time{}):
				if p.Format != "date-time" {
					t.Errorf("schema %s.%s: a time without format date-time", name, prop)
				}
			}
		}
		for _, r := range sc.Required {
			if _, ok := fields[r]; !ok {
				t.Errorf("schema %s: requires %q, which %s lacks", name, r, sc.GoType)
			}
		}
	}
	for name := range wireTypes {
		if !seen[name] {
			t.Errorf("%s is not documented", name)
		}
	}
}

// isResponse: types the server sends (their always-present fields are
// required); requests list what Validate demands instead.
func isResponse(goType string) bool {
	return !strings.HasSuffix(goType, "Request") && goType != "wire.Decision" && goType != "wire.UserUpdate"
}

// TestOpenAPIErrorCodes: every code WriteError can produce is documented.
func TestOpenAPIErrorCodes(t *testing.T) {
	b, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas struct {
				ErrorDetail struct {
					Properties struct {
						Code struct {
							Enum []string `yaml:"enum"`
						} `yaml:"code"`
					} `yaml:"properties"`
				} `yaml:"ErrorDetail"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	documented := doc.Components.Schemas.ErrorDetail.Properties.Code.Enum
	s := apitest.Start(t, apitest.Options{})
	// Codes the live server answers with, provoked through HTTP.
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, "/api/v1/me", nil},                             // unauthenticated
		{http.MethodPost, "/api/v1/login", "{"},                         // invalid
		{http.MethodPut, "/api/v1/me", nil},                             // method_not_allowed
		{http.MethodGet, "/api/v1/nosuch", nil},                         // not_found
		{http.MethodPost, "/api/v1/login", strings.Repeat(" ", 70<<10)}, // too_large
	} {
		a := call(t, s, cred{}, c.method, c.path, c.body)
		if code := a.errorCode(); code == "" || !slices.Contains(documented, code) {
			t.Errorf("%s %s: code %q is not documented in %v", c.method, c.path, code, documented)
		}
	}
}
