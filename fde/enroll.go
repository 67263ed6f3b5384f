package fde

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
)

// Payload types of the enrollment profile.
const (
	PayloadTypeMDM  = "com.apple.mdm"
	PayloadTypeSCEP = "com.apple.security.scep"
	PayloadTypeRoot = "com.apple.security.root"
)

// MDM access rights (com.apple.mdm AccessRights bits) fvescrow needs.
const (
	AccessProfileInspection = 1    // ProfileList
	AccessProfileInstall    = 2    // InstallProfile (the FileVault escrow profile)
	AccessLockAndPasscode   = 4    // RotateFileVaultKey, ClearPasscode
	AccessDeviceInfo        = 16   // DeviceInformation
	AccessSecurityQueries   = 1024 // SecurityInfo (FDE_PersonalRecoveryKeyCMS)
	// DefaultAccessRights is least privilege for escrow: no erase, apps or
	// settings.
	DefaultAccessRights = AccessProfileInspection | AccessProfileInstall | AccessLockAndPasscode | AccessDeviceInfo | AccessSecurityQueries
)

// DefaultEnrollmentIdentifier is the enrollment profile's PayloadIdentifier.
const DefaultEnrollmentIdentifier = "com.github.fvescrow.enroll"

// EnrollmentOptions configure NewEnrollmentProfile.
type EnrollmentOptions struct {
	Identifier   string // default DefaultEnrollmentIdentifier
	Organization string
	// BaseURL is the server's public URL (https://mdm.example.com); the
	// profile points at BaseURL/mdm, BaseURL/checkin and BaseURL/scep.
	BaseURL string
	// Topic is the APNs topic from the push certificate (com.apple.mgmt...).
	Topic string
	// Challenge is the SCEP challenge password. It is in the profile in
	// clear, as SCEP requires: treat the profile as sensitive.
	Challenge string
	// SCEPCA, when set, pins the SCEP CA by its SHA-256 fingerprint.
	SCEPCA *x509.Certificate
	// AccessRights defaults to DefaultAccessRights; it must include 1024
	// (security queries) and 4 (RotateFileVaultKey).
	AccessRights int
	// TrustAnchor, when set, adds a root payload so devices trust a server
	// certificate from a private CA.
	TrustAnchor *x509.Certificate
	Rand        io.Reader
}

type scepContent struct {
	URL           string       `plist:"URL"`
	Name          string       `plist:"Name"`
	Subject       [][][]string `plist:"Subject"`
	Challenge     string       `plist:"Challenge,omitempty"`
	Keysize       int          `plist:"Keysize"`
	KeyType       string       `plist:"Key Type"`
	KeyUsage      int          `plist:"Key Usage"`
	CAFingerprint []byte       `plist:"CAFingerprint,omitempty"`
}

type scepPayload struct {
	PayloadHeader
	PayloadContent scepContent `plist:"PayloadContent"`
}

type mdmPayload struct {
	PayloadHeader
	IdentityCertificateUUID string   `plist:"IdentityCertificateUUID"`
	Topic                   string   `plist:"Topic"`
	ServerURL               string   `plist:"ServerURL"`
	CheckInURL              string   `plist:"CheckInURL"`
	SignMessage             bool     `plist:"SignMessage"`
	AccessRights            int      `plist:"AccessRights"`
	CheckOutWhenRemoved     bool     `plist:"CheckOutWhenRemoved"`
	ServerCapabilities      []string `plist:"ServerCapabilities"`
}

type rootPayload struct {
	PayloadHeader
	PayloadCertificateFileName string `plist:"PayloadCertificateFileName"`
	PayloadContent             []byte `plist:"PayloadContent"`
}

// NewEnrollmentProfile builds the MDM enrollment profile: a SCEP payload
// whose subject is unique per device (the hardware UUID) and an MDM payload
// that signs every message (Mdm-Signature), with a separate check-in URL and
// the bootstrap-token capability.
func NewEnrollmentProfile(o EnrollmentOptions) (*Profile, error) {
	if o.Identifier == "" {
		o.Identifier = DefaultEnrollmentIdentifier
	}
	base, err := url.Parse(strings.TrimRight(o.BaseURL, "/"))
	if err != nil || base.Scheme != "https" || base.Host == "" {
		// Apple's schema requires https ServerURL and CheckInURL, and Macs
		// refuse plain HTTP MDM servers.
		return nil, fmt.Errorf("enrollment profile: base URL %q: want https://host[:port][/path]", o.BaseURL)
	}
	if !strings.HasPrefix(o.Topic, "com.apple.mgmt.") {
		return nil, errors.New("enrollment profile: an APNs topic (com.apple.mgmt...) is required: upload the push certificate first")
	}
	if o.AccessRights == 0 {
		o.AccessRights = DefaultAccessRights
	}
	if o.AccessRights&(AccessSecurityQueries|AccessLockAndPasscode) != AccessSecurityQueries|AccessLockAndPasscode ||
		o.AccessRights&(AccessProfileInspection|AccessProfileInstall) != AccessProfileInspection|AccessProfileInstall || o.AccessRights > 8191 || o.AccessRights < 0 {
		return nil, fmt.Errorf("enrollment profile: access rights %d must include 1, 2, 4 and 1024 and stay within 8191", o.AccessRights)
	}
	b := ProfileBuilder{Identifier: o.Identifier, Rand: o.Rand}
	p, err := b.New("fvescrow enrollment", "Enrolls this device in fvescrow to escrow its FileVault recovery key.", o.Organization)
	if err != nil {
		return nil, err
	}
	scepHdr, err := b.Header(PayloadTypeSCEP, "scep", "fvescrow device identity")
	if err != nil {
		return nil, err
	}
	mdmHdr, err := b.Header(PayloadTypeMDM, "mdm", "fvescrow MDM")
	if err != nil {
		return nil, err
	}
	u := base.String()
	subject := [][][]string{{{"CN", "fvescrow %HardwareUUID%"}}}
	if o.Organization != "" {
		subject = append([][][]string{{{"O", o.Organization}}}, subject...)
	}
	sc := scepContent{URL: u + "/scep", Name: "fvescrow", Subject: subject, Challenge: o.Challenge, Keysize: 2048, KeyType: "RSA", KeyUsage: 5}
	if o.SCEPCA != nil {
		sum := sha256.Sum256(o.SCEPCA.Raw)
		sc.CAFingerprint = sum[:]
	}
	if o.TrustAnchor != nil {
		hdr, err := b.Header(PayloadTypeRoot, "trust-anchor", "fvescrow server trust anchor")
		if err != nil {
			return nil, err
		}
		p.PayloadContent = append(p.PayloadContent, rootPayload{PayloadHeader: hdr, PayloadCertificateFileName: "fvescrow-anchor.cer", PayloadContent: o.TrustAnchor.Raw})
	}
	p.PayloadContent = append(p.PayloadContent,
		scepPayload{PayloadHeader: scepHdr, PayloadContent: sc},
		mdmPayload{
			PayloadHeader:           mdmHdr,
			IdentityCertificateUUID: scepHdr.PayloadUUID,
			Topic:                   o.Topic,
			ServerURL:               u + "/mdm",
			CheckInURL:              u + "/checkin",
			SignMessage:             true,
			AccessRights:            o.AccessRights,
			CheckOutWhenRemoved:     true,
			ServerCapabilities:      []string{"com.apple.mdm.per-user-connections", "com.apple.mdm.bootstraptoken"},
		},
	)
	return p, nil
}
