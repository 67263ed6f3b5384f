package fde

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"
)

// Payload types fvescrow writes.
const (
	PayloadTypeFileVault2 = "com.apple.MCX.FileVault2"
	PayloadTypeEscrow     = "com.apple.security.FDERecoveryKeyEscrow"
	PayloadTypePKCS1      = "com.apple.security.pkcs1"
	PayloadTypeMCX        = "com.apple.MCX"
)

// DefaultFileVaultIdentifier is the PayloadIdentifier of the FileVault
// profile. It is stable so that a re-sent profile replaces the installed one
// instead of adding a second escrow payload (which macOS refuses).
const DefaultFileVaultIdentifier = "com.github.fvescrow.filevault"

// Profile is a configuration profile. Marshal it with XML; sign it with
// SignProfile.
type Profile struct {
	PayloadContent      []any  `plist:"PayloadContent"`
	PayloadDescription  string `plist:"PayloadDescription,omitempty"`
	PayloadDisplayName  string `plist:"PayloadDisplayName"`
	PayloadIdentifier   string `plist:"PayloadIdentifier"`
	PayloadOrganization string `plist:"PayloadOrganization,omitempty"`
	PayloadScope        string `plist:"PayloadScope,omitempty"`
	PayloadType         string `plist:"PayloadType"`
	PayloadUUID         string `plist:"PayloadUUID"`
	PayloadVersion      int    `plist:"PayloadVersion"`
}

// PayloadHeader holds the keys common to every payload.
type PayloadHeader struct {
	PayloadDisplayName string `plist:"PayloadDisplayName,omitempty"`
	PayloadIdentifier  string `plist:"PayloadIdentifier"`
	PayloadType        string `plist:"PayloadType"`
	PayloadUUID        string `plist:"PayloadUUID"`
	PayloadVersion     int    `plist:"PayloadVersion"`
}

// XML returns the profile as an XML property list.
func (p *Profile) XML() ([]byte, error) {
	b, err := plist.MarshalIndent(p, "\t")
	if err != nil {
		return nil, fmt.Errorf("marshal profile: %w", err)
	}
	return b, nil
}

// ProfileBuilder hands out the identifiers and UUIDs of one profile.
type ProfileBuilder struct {
	Identifier string
	Rand       io.Reader // UUID source; crypto/rand when nil
}

var identifierRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$`)

// New starts a system-scoped profile.
func (b ProfileBuilder) New(displayName, description, organization string) (*Profile, error) {
	if !identifierRE.MatchString(b.Identifier) {
		return nil, fmt.Errorf("profile identifier %q: want reverse-DNS form such as com.example.filevault", b.Identifier)
	}
	u, err := b.uuid()
	if err != nil {
		return nil, err
	}
	return &Profile{
		PayloadDisplayName:  displayName,
		PayloadDescription:  description,
		PayloadIdentifier:   b.Identifier,
		PayloadOrganization: organization,
		PayloadScope:        "System",
		PayloadType:         "Configuration",
		PayloadUUID:         u,
		PayloadVersion:      1,
	}, nil
}

// Header returns a payload header with a stable identifier (profile
// identifier + "." + suffix) and a fresh UUID.
func (b ProfileBuilder) Header(payloadType, suffix, displayName string) (PayloadHeader, error) {
	u, err := b.uuid()
	if err != nil {
		return PayloadHeader{}, err
	}
	return PayloadHeader{
		PayloadDisplayName: displayName,
		PayloadIdentifier:  b.Identifier + "." + suffix,
		PayloadType:        payloadType,
		PayloadUUID:        u,
		PayloadVersion:     1,
	}, nil
}

func (b ProfileBuilder) uuid() (string, error) {
	r := b.Rand
	if r == nil {
		r = rand.Reader
	}
	return newUUID(r)
}

// FileVaultOptions configure NewFileVaultProfile.
type FileVaultOptions struct {
	Identifier   string // default DefaultFileVaultIdentifier
	Organization string
	// Location is shown to the user when FileVault is enabled: where the key
	// is escrowed ("Example Corp IT"). Required.
	Location string
	// DeviceKey is shown in the forgotten-password help text; the serial
	// number when empty.
	DeviceKey         string
	EscrowCertificate *x509.Certificate // RSA; required
	// EscrowOnly leaves out com.apple.MCX.FileVault2, for Macs where something
	// else enforces FileVault.
	EscrowOnly bool
	// MaxBypassAttempts sets DeferForceAtUserLoginMaxBypassAttempts (-1..9999).
	MaxBypassAttempts           *int
	DontAskAtUserLogout         bool
	ForceEnableInSetupAssistant bool // macOS 14+, automated enrollment only
	DontAllowFDEDisable         bool
	Rand                        io.Reader // UUID source; crypto/rand when nil
}

type fileVault2Payload struct {
	PayloadHeader
	Enable                                 string `plist:"Enable"`
	Defer                                  bool   `plist:"Defer"`
	UseRecoveryKey                         bool   `plist:"UseRecoveryKey"`
	ShowRecoveryKey                        bool   `plist:"ShowRecoveryKey"`
	DeferForceAtUserLoginMaxBypassAttempts *int   `plist:"DeferForceAtUserLoginMaxBypassAttempts,omitempty"`
	DeferDontAskAtUserLogout               bool   `plist:"DeferDontAskAtUserLogout,omitempty"`
	ForceEnableInSetupAssistant            bool   `plist:"ForceEnableInSetupAssistant,omitempty"`
}

type escrowPayload struct {
	PayloadHeader
	Location               string `plist:"Location"`
	EncryptCertPayloadUUID string `plist:"EncryptCertPayloadUUID"`
	DeviceKey              string `plist:"DeviceKey,omitempty"`
}

type pkcs1Payload struct {
	PayloadHeader
	PayloadCertificateFileName string `plist:"PayloadCertificateFileName"`
	PayloadContent             []byte `plist:"PayloadContent"`
}

type mcxFDEPayload struct {
	PayloadHeader
	DontAllowFDEDisable bool `plist:"dontAllowFDEDisable"`
}

// NewFileVaultProfile builds the profile that turns FileVault on (unless
// EscrowOnly) and has macOS encrypt the personal recovery key to the escrow
// certificate. The recovery key is never shown to the user.
func NewFileVaultProfile(o FileVaultOptions) (*Profile, error) {
	if o.Identifier == "" {
		o.Identifier = DefaultFileVaultIdentifier
	}
	if o.Location == "" {
		return nil, errors.New("filevault profile: a location (who holds the key) is required")
	}
	if o.EscrowCertificate == nil {
		return nil, errors.New("filevault profile: an escrow certificate is required")
	}
	if _, ok := o.EscrowCertificate.PublicKey.(*rsa.PublicKey); !ok {
		return nil, errors.New("filevault profile: the escrow certificate must have an RSA key (CMS key transport)")
	}
	if o.MaxBypassAttempts != nil && (*o.MaxBypassAttempts < -1 || *o.MaxBypassAttempts > 9999) {
		return nil, fmt.Errorf("filevault profile: bypass attempts %d out of range -1..9999", *o.MaxBypassAttempts)
	}
	if o.EscrowOnly && (o.MaxBypassAttempts != nil || o.DontAskAtUserLogout || o.ForceEnableInSetupAssistant) {
		return nil, errors.New("filevault profile: bypass, logout and Setup Assistant options need FileVault enforcement, not --escrow-only")
	}
	b := ProfileBuilder{Identifier: o.Identifier, Rand: o.Rand}
	name, desc := "FileVault and recovery key escrow", "Turns on FileVault and escrows the personal recovery key with "+o.Location+"."
	if o.EscrowOnly {
		name, desc = "FileVault recovery key escrow", "Escrows the FileVault personal recovery key with "+o.Location+"."
	}
	p, err := b.New(name, desc, o.Organization)
	if err != nil {
		return nil, err
	}
	certHdr, err := b.Header(PayloadTypePKCS1, "escrow-certificate", "FileVault escrow certificate")
	if err != nil {
		return nil, err
	}
	escrowHdr, err := b.Header(PayloadTypeEscrow, "escrow", "FileVault recovery key escrow")
	if err != nil {
		return nil, err
	}
	if !o.EscrowOnly {
		fvHdr, err := b.Header(PayloadTypeFileVault2, "filevault2", "FileVault")
		if err != nil {
			return nil, err
		}
		p.PayloadContent = append(p.PayloadContent, fileVault2Payload{
			PayloadHeader:                          fvHdr,
			Enable:                                 "On",
			Defer:                                  true,
			UseRecoveryKey:                         true,
			ShowRecoveryKey:                        false,
			DeferForceAtUserLoginMaxBypassAttempts: o.MaxBypassAttempts,
			DeferDontAskAtUserLogout:               o.DontAskAtUserLogout,
			ForceEnableInSetupAssistant:            o.ForceEnableInSetupAssistant,
		})
	}
	p.PayloadContent = append(p.PayloadContent,
		escrowPayload{
			PayloadHeader:          escrowHdr,
			Location:               o.Location,
			EncryptCertPayloadUUID: certHdr.PayloadUUID,
			DeviceKey:              o.DeviceKey,
		},
		pkcs1Payload{
			PayloadHeader:              certHdr,
			PayloadCertificateFileName: "fvescrow-escrow.cer",
			PayloadContent:             o.EscrowCertificate.Raw,
		},
	)
	if o.DontAllowFDEDisable {
		mcxHdr, err := b.Header(PayloadTypeMCX, "mcx", "FileVault options")
		if err != nil {
			return nil, err
		}
		p.PayloadContent = append(p.PayloadContent, mcxFDEPayload{PayloadHeader: mcxHdr, DontAllowFDEDisable: true})
	}
	return p, nil
}

// SignProfile wraps a profile in CMS SignedData so macOS shows it as
// verified. The signer certificate and any intermediates are embedded.
func SignProfile(profile []byte, cert *x509.Certificate, key PrivateKey, intermediates ...*x509.Certificate) ([]byte, error) {
	if cert == nil || key.IsZero() {
		return nil, errors.New("sign profile: signing certificate and key are required")
	}
	sd, err := pkcs7.NewSignedData(profile)
	if err != nil {
		return nil, fmt.Errorf("sign profile: %w", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSignerChain(cert, key.Signer(), intermediates, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fmt.Errorf("sign profile: %w", err)
	}
	der, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("sign profile: %w", err)
	}
	return der, nil
}
