// Package fakemac is a Mac for tests, speaking the real MDM protocol: it
// enrolls through the server's SCEP endpoint with the challenge from the
// enrollment profile, signs every request with its identity (Mdm-Signature),
// installs the FileVault escrow profile it is sent, and answers SecurityInfo
// with an FDE_PersonalRecoveryKeyCMS that OpenSSL encrypts to the escrow
// certificate from that profile, as macOS does.
package fakemac

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/fvescrow/fvescrow/fde"
	"github.com/micromdm/nanomdm/test/protocol"
	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"
)

// User is a local account the Mac reports in UserList.
type User struct {
	UserName       string
	FullName       string
	UID            int
	GUID           string
	HasSecureToken bool
	IsLoggedIn     bool
	MobileAccount  bool
}

// Behavior overrides the answer to a request type: it returns the status
// and extra result keys. Return "" to use the normal answer.
type Behavior func(m *Mac, cmd map[string]any) (status string, extra map[string]any)

// Options configure a Mac.
type Options struct {
	Client      *http.Client // must trust the server; default http.DefaultClient
	UDID        string       // default random
	Serial      string       // default random
	OSVersion   string       // default 15.1
	Users       []User
	UnlockToken []byte // sent in TokenUpdate, as iOS does
	KeySize     int    // SCEP key size, default from the profile (2048)
}

// Mac is one simulated Mac. Safe for use by one goroutine at a time (the
// state it reports is locked).
type Mac struct {
	UDID, Serial string
	client       *http.Client
	transport    *protocol.Transport
	topic        string
	identity     *x509.Certificate
	key          crypto.PrivateKey

	mu         sync.Mutex
	osVersion  string
	users      []User
	unlock     []byte
	escrowCert *x509.Certificate // from the installed escrow profile
	profiles   []installed
	fileVault  bool
	prk        string
	cms        []byte // what /var/db/FileVaultPRK.dat would hold
	behaviors  map[string]Behavior
	handled    []string
	unlocks    []string // FileVaultUnlock.Password of each RotateFileVaultKey (test secrets)
}

type installed struct {
	Identifier string
	UUID       string
	Types      []string
}

// Enroll enrolls a new Mac with an enrollment profile (XML).
func Enroll(ctx context.Context, profile []byte, o Options) (*Mac, error) {
	if o.Client == nil {
		o.Client = http.DefaultClient
	}
	m := &Mac{UDID: o.UDID, Serial: o.Serial, client: o.Client, osVersion: o.OSVersion, users: o.Users, unlock: o.UnlockToken, behaviors: map[string]Behavior{}}
	if m.UDID == "" {
		m.UDID = randomUUID()
	}
	if m.Serial == "" {
		m.Serial = randomSerial()
	}
	if m.osVersion == "" {
		m.osVersion = "15.1"
	}
	var p struct {
		PayloadContent []map[string]any
	}
	if err := plist.Unmarshal(profile, &p); err != nil {
		return nil, fmt.Errorf("enrollment profile: %w", err)
	}
	var scepP, mdmP map[string]any
	for _, pl := range p.PayloadContent {
		switch pl["PayloadType"] {
		case fde.PayloadTypeSCEP:
			scepP = pl
		case fde.PayloadTypeMDM:
			mdmP = pl
		}
	}
	if scepP == nil || mdmP == nil {
		return nil, errors.New("enrollment profile: want a SCEP and an MDM payload")
	}
	if mdmP["SignMessage"] != true {
		return nil, errors.New("enrollment profile: SignMessage must be true (this Mac only signs messages)")
	}
	if mdmP["IdentityCertificateUUID"] != scepP["PayloadUUID"] {
		return nil, errors.New("enrollment profile: IdentityCertificateUUID does not name the SCEP payload")
	}
	sc, _ := scepP["PayloadContent"].(map[string]any)
	scepURL, _ := sc["URL"].(string)
	challenge, _ := sc["Challenge"].(string)
	bits := o.KeySize
	if ks, ok := sc["Keysize"].(uint64); ok && bits == 0 {
		bits = int(ks)
	}
	if bits == 0 {
		bits = 1024 // Apple's default when the profile says nothing
	}
	cn := subjectCN(sc["Subject"], m)
	key, cert, err := scepEnroll(ctx, o.Client, scepURL, cn, challenge, bits)
	if err != nil {
		return nil, fmt.Errorf("SCEP: %w", err)
	}
	m.key, m.identity = key, cert
	serverURL, _ := mdmP["ServerURL"].(string)
	checkInURL, _ := mdmP["CheckInURL"].(string)
	m.topic, _ = mdmP["Topic"].(string)
	m.transport = protocol.NewTransport(
		protocol.WithSignMessage(),
		protocol.WithIdentityProvider(func(context.Context) (*x509.Certificate, crypto.PrivateKey, error) { return m.identity, m.key, nil }),
		protocol.WithMDMURLs(serverURL, checkInURL),
		protocol.WithClient(o.Client),
	)
	if err := m.Authenticate(ctx); err != nil {
		return nil, err
	}
	if err := m.TokenUpdate(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// subjectCN substitutes the profile's %HardwareUUID% etc. in the subject's
// common name.
func subjectCN(subject any, m *Mac) string {
	cn := "fakemac " + m.UDID
	outer, _ := subject.([]any)
	for _, rdn := range outer {
		inner, _ := rdn.([]any)
		for _, pair := range inner {
			kv, _ := pair.([]any)
			if len(kv) == 2 && kv[0] == "CN" {
				if v, ok := kv[1].(string); ok {
					cn = v
				}
			}
		}
	}
	return strings.NewReplacer("%HardwareUUID%", m.UDID, "%SerialNumber%", m.Serial, "%ComputerName%", m.Serial+"'s Mac").Replace(cn)
}

// Identity is the device certificate SCEP issued.
func (m *Mac) Identity() *x509.Certificate { return m.identity }

func (m *Mac) checkin(ctx context.Context, msg map[string]any) ([]byte, error) {
	msg["UDID"] = m.UDID
	body, err := plist.Marshal(msg)
	if err != nil {
		return nil, err
	}
	resp, err := m.transport.DoCheckIn(ctx, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, &HTTPError{Status: resp.StatusCode, URL: "check-in"}
	}
	return b, nil
}

// Authenticate sends the Authenticate check-in.
func (m *Mac) Authenticate(ctx context.Context) error {
	_, err := m.checkin(ctx, map[string]any{
		"MessageType": "Authenticate", "Topic": m.topic, "SerialNumber": m.Serial, "DeviceName": m.Serial + "'s Mac",
		"Model": "Mac14,2", "ModelName": "MacBook Air", "ProductName": "Mac14,2", "OSVersion": m.osVersion, "BuildVersion": "24B83",
	})
	return err
}

// TokenUpdate sends a TokenUpdate (with the UnlockToken, if set).
func (m *Mac) TokenUpdate(ctx context.Context) error {
	msg := map[string]any{"MessageType": "TokenUpdate", "Topic": m.topic, "PushMagic": "fake-push-magic-" + m.UDID, "Token": []byte("fake-apns-token-" + m.UDID)}
	m.mu.Lock()
	if len(m.unlock) > 0 {
		msg["UnlockToken"] = m.unlock
	}
	m.mu.Unlock()
	_, err := m.checkin(ctx, msg)
	return err
}

// SetBootstrapToken escrows a bootstrap token, as macOS does after an admin
// signs in on an Apple silicon Mac.
func (m *Mac) SetBootstrapToken(ctx context.Context, tok []byte) error {
	_, err := m.checkin(ctx, map[string]any{"MessageType": "SetBootstrapToken", "BootstrapToken": tok})
	return err
}

// GetBootstrapToken asks for the escrowed bootstrap token.
func (m *Mac) GetBootstrapToken(ctx context.Context) ([]byte, error) {
	b, err := m.checkin(ctx, map[string]any{"MessageType": "GetBootstrapToken"})
	if err != nil || len(b) == 0 {
		return nil, err
	}
	var r struct{ BootstrapToken []byte }
	if err := plist.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return r.BootstrapToken, nil
}

// CheckOut tells the server the Mac left management.
func (m *Mac) CheckOut(ctx context.Context) error {
	_, err := m.checkin(ctx, map[string]any{"MessageType": "CheckOut"})
	return err
}

// Handle overrides the answer to a request type.
func (m *Mac) Handle(requestType string, b Behavior) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.behaviors[requestType] = b
}

// Handled lists the request types answered so far, in order.
func (m *Mac) Handled() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.handled...)
}

// Connect reports Idle and answers commands until the server has none left,
// returning the request types it answered.
func (m *Mac) Connect(ctx context.Context) ([]string, error) {
	var done []string
	report := map[string]any{"Status": "Idle"}
	for i := 0; i < 100; i++ {
		report["UDID"] = m.UDID
		body, err := plist.Marshal(report)
		if err != nil {
			return done, err
		}
		resp, err := m.transport.DoReportResultsAndFetchNext(ctx, bytes.NewReader(body))
		if err != nil {
			return done, err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return done, &HTTPError{Status: resp.StatusCode, URL: "command report"}
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return done, nil
		}
		var cmd struct {
			CommandUUID string
			Command     map[string]any
		}
		if err := plist.Unmarshal(b, &cmd); err != nil {
			return done, fmt.Errorf("server sent a malformed command: %w", err)
		}
		rt, _ := cmd.Command["RequestType"].(string)
		report = m.answer(rt, cmd.Command)
		report["CommandUUID"] = cmd.CommandUUID
		done = append(done, rt)
		m.mu.Lock()
		m.handled = append(m.handled, rt)
		m.mu.Unlock()
	}
	return done, errors.New("more than 100 commands in one connect")
}

func (m *Mac) answer(rt string, cmd map[string]any) map[string]any {
	m.mu.Lock()
	b := m.behaviors[rt]
	m.mu.Unlock()
	if b != nil {
		if status, extra := b(m, cmd); status != "" {
			r := map[string]any{"Status": status}
			for k, v := range extra {
				r[k] = v
			}
			return r
		}
	}
	switch rt {
	case fde.RequestInstallProfile:
		return m.installProfile(cmd)
	case fde.RequestSecurityInfo:
		return m.securityInfo()
	case fde.RequestUserList:
		return m.userList()
	case fde.RequestProfileList:
		return m.profileList()
	case fde.RequestRotateFileVaultKey:
		return m.rotate(cmd, true)
	}
	return ErrorAnswer(12021, "MCMDMErrorDomain", "Unknown command: "+rt)
}

// ErrorAnswer is an Error result with one ErrorChain entry.
func ErrorAnswer(code int, domain, desc string) map[string]any {
	return map[string]any{"Status": "Error", "ErrorChain": []any{map[string]any{
		"ErrorCode": code, "ErrorDomain": domain, "LocalizedDescription": desc, "USEnglishDescription": desc,
	}}}
}

func (m *Mac) installProfile(cmd map[string]any) map[string]any {
	payload, _ := cmd["Payload"].([]byte)
	if len(payload) > 0 && payload[0] == 0x30 { // signed (CMS) profile
		p7, err := pkcs7.Parse(payload)
		if err != nil {
			return ErrorAnswer(4001, "MCProfileErrorDomain", "The profile could not be read.")
		}
		payload = p7.Content
	}
	var p struct {
		PayloadIdentifier string
		PayloadUUID       string
		PayloadContent    []map[string]any
	}
	if err := plist.Unmarshal(payload, &p); err != nil || p.PayloadIdentifier == "" {
		return ErrorAnswer(4001, "MCProfileErrorDomain", "The profile could not be read.")
	}
	inst := installed{Identifier: p.PayloadIdentifier, UUID: p.PayloadUUID}
	var escrowRef string
	certs := map[string][]byte{}
	for _, pl := range p.PayloadContent {
		t, _ := pl["PayloadType"].(string)
		inst.Types = append(inst.Types, t)
		switch t {
		case fde.PayloadTypeEscrow:
			escrowRef, _ = pl["EncryptCertPayloadUUID"].(string)
		case fde.PayloadTypePKCS1:
			u, _ := pl["PayloadUUID"].(string)
			certs[u], _ = pl["PayloadContent"].([]byte)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if escrowRef != "" {
		c, err := x509.ParseCertificate(certs[escrowRef])
		if err != nil {
			return ErrorAnswer(4002, "MCProfileErrorDomain", "The escrow certificate payload is missing.")
		}
		m.escrowCert = c
	}
	kept := m.profiles[:0]
	for _, old := range m.profiles {
		if old.Identifier != inst.Identifier { // same identifier replaces
			kept = append(kept, old)
		}
	}
	m.profiles = append(kept, inst)
	return map[string]any{"Status": "Acknowledged"}
}

// EnableFileVault turns FileVault on as the deferred enablement does at the
// next logout: a new personal recovery key, encrypted to the escrow
// certificate if the escrow profile is installed.
func (m *Mac) EnableFileVault() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fileVault = true
	return m.newPRKLocked()
}

// NewPRK makes a new personal recovery key (as a rotation would).
func (m *Mac) NewPRK() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.newPRKLocked()
}

func (m *Mac) newPRKLocked() error { return m.setPRKLocked(RandomPRK()) }

// setPRKLocked makes key the recovery key and writes its blob for
// SecurityInfo, as the escrow payload has macOS do.
func (m *Mac) setPRKLocked(key string) error {
	m.prk, m.cms = key, nil
	if m.escrowCert == nil {
		return nil // no escrow payload: the key is never written for the MDM
	}
	cms, err := EncryptCMS(m.escrowCert, key)
	if err != nil {
		return err
	}
	m.cms = cms
	return nil
}

// PRK is the Mac's current personal recovery key (test secret).
func (m *Mac) PRK() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.prk
}

// EscrowCert is the certificate from the installed escrow profile.
func (m *Mac) EscrowCert() *x509.Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.escrowCert
}

func (m *Mac) securityInfo() map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	si := map[string]any{
		"FDE_Enabled":                                      m.fileVault,
		"FDE_HasPersonalRecoveryKey":                       m.prk != "",
		"FDE_HasInstitutionalRecoveryKey":                  false,
		"ManagementStatus":                                 map[string]any{"EnrolledViaDEP": false, "UserApprovedEnrollment": true, "IsUserEnrollment": false},
		"BootstrapTokenAllowedForAuthentication":           "allowed",
		"BootstrapTokenRequiredForSoftwareUpdate":          false,
		"BootstrapTokenRequiredForKernelExtensionApproval": false,
		"SystemIntegrityProtectionEnabled":                 true,
	}
	if len(m.cms) > 0 {
		si["FDE_PersonalRecoveryKeyCMS"] = m.cms
		si["FDE_PersonalRecoveryKeyDeviceKey"] = m.Serial
	}
	return map[string]any{"Status": "Acknowledged", "SecurityInfo": si}
}

// SecurityInfoAnswer is the Mac's normal answer to SecurityInfo (Status and
// SecurityInfo), for a Behavior that changes part of it.
func (m *Mac) SecurityInfoAnswer() map[string]any { return m.securityInfo() }

func (m *Mac) userList() map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	users := []any{}
	for _, u := range m.users {
		users = append(users, map[string]any{"UserName": u.UserName, "FullName": u.FullName, "UID": u.UID, "UserGUID": u.GUID,
			"HasSecureToken": u.HasSecureToken, "IsLoggedIn": u.IsLoggedIn, "MobileAccount": u.MobileAccount, "HasDataToSync": false})
	}
	return map[string]any{"Status": "Acknowledged", "Users": users}
}

// SetUsers replaces the accounts the Mac reports.
func (m *Mac) SetUsers(us []User) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.users = us
}

func (m *Mac) profileList() map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := []any{}
	for _, p := range m.profiles {
		content := []any{}
		for _, t := range p.Types {
			content = append(content, map[string]any{"PayloadType": t})
		}
		list = append(list, map[string]any{"PayloadIdentifier": p.Identifier, "PayloadUUID": p.UUID, "IsManaged": true, "PayloadContent": content})
	}
	return map[string]any{"Status": "Acknowledged", "ProfileList": list}
}

// EncryptCMS encrypts text to cert with `openssl cms -encrypt -stream`, the
// shape Macs produce (BER, 3DES, RSA PKCS#1 v1.5).
func EncryptCMS(cert *x509.Certificate, text string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "fakemac")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	certPath, inPath := filepath.Join(dir, "escrow.pem"), filepath.Join(dir, "prk.txt")
	if err := os.WriteFile(certPath, fde.EncodeCertificatePEM(cert), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(inPath, []byte(text), 0o600); err != nil {
		return nil, err
	}
	var out, stderr bytes.Buffer
	c := exec.Command("openssl", "cms", "-encrypt", "-binary", "-stream", "-in", inPath, "-outform", "DER", "-des3", "-recip", certPath)
	c.Stdout, c.Stderr = &out, &stderr
	if err := c.Run(); err != nil {
		return nil, fmt.Errorf("openssl cms -encrypt: %v: %s", err, stderr.String())
	}
	return out.Bytes(), nil
}

const prkAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// RandomPRK makes a key in Apple's format.
func RandomPRK() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	var s strings.Builder
	for i, c := range b {
		if i > 0 && i%4 == 0 {
			s.WriteByte('-')
		}
		s.WriteByte(prkAlphabet[int(c)%len(prkAlphabet)])
	}
	return s.String()
}

func randomUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]))
}

func randomSerial() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(prkAlphabet[int(c)%len(prkAlphabet)])
	}
	return s.String()
}

// Sign makes the Mdm-Signature header value for body, for tests that send
// hand-made requests as this Mac.
func (m *Mac) Sign(body []byte) (string, error) {
	return m.transport.SignMessage(context.Background(), body)
}
