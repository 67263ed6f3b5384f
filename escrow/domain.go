package escrow

import (
	"fmt"
	"regexp"
	"time"

	"github.com/fvescrow/fvescrow/fde"
)

// DeviceID identifies a device: its MDM enrollment ID (the UDID for the
// device channel).
type DeviceID string

var deviceIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// Validate checks the ID is safe to use as a path element in every backend.
func (id DeviceID) Validate() error {
	if !deviceIDRE.MatchString(string(id)) {
		return fmt.Errorf("%w: device ID %q", ErrInvalid, truncate(string(id), 40))
	}
	return nil
}

// Device is what fvescrow knows about a Mac (or iPhone).
type Device struct {
	ID         DeviceID
	UDID       string
	Serial     string
	DeviceKey  string // FDE_PersonalRecoveryKeyDeviceKey, or the profile's DeviceKey
	Hostname   string
	Model      string
	OSVersion  string
	Owner      string // owner reference: IdP subject or e-mail
	OwnerEmail string
	Platform   string // "macOS", "iOS", ...
	// Attrs holds state the doors record (FileVault flags, escrow status...).
	// It must never hold a secret.
	Attrs     map[string]string
	CreatedAt time.Time
	UpdatedAt time.Time
	RetiredAt time.Time // zero while the device is active
}

// Retired reports whether the device was retired.
func (d Device) Retired() bool { return !d.RetiredAt.IsZero() }

// SecretKind names the kinds of secret fvescrow keeps.
type SecretKind string

const (
	KindPRK            SecretKind = "prk"             // FileVault personal recovery key
	KindBootstrapToken SecretKind = "bootstrap-token" // macOS bootstrap token
	KindUnlockToken    SecretKind = "unlock-token"    // iOS UnlockToken (ClearPasscode)
	KindEscrowKey      SecretKind = "escrow-key"      // escrow identity private key (PEM)
	KindAuditKey       SecretKind = "audit-key"       // audit checkpoint signing key
)

// Valid reports whether k is a known kind.
func (k SecretKind) Valid() bool {
	switch k {
	case KindPRK, KindBootstrapToken, KindUnlockToken, KindEscrowKey, KindAuditKey, KindSCEPCAKey, KindSCEPChallenge, KindPushKey, KindTOTP:
		return true
	}
	return false
}

// SecretRef addresses one secret (all its versions): a kind and an owner,
// which is a DeviceID for device secrets and a certificate fingerprint for
// escrow keys.
type SecretRef struct {
	Kind  SecretKind
	Owner string
}

func (r SecretRef) String() string { return string(r.Kind) + "/" + r.Owner }

// Validate checks both parts are safe path elements.
func (r SecretRef) Validate() error {
	if !r.Kind.Valid() {
		return fmt.Errorf("%w: secret kind %q", ErrInvalid, truncate(string(r.Kind), 40))
	}
	return DeviceID(r.Owner).Validate()
}

// SecretMeta is non-secret metadata stored beside a secret (Vault custom
// metadata): device serial, kind, source. Never put a secret in it.
type SecretMeta map[string]string

// Source says how a key version arrived.
type Source string

const (
	SourceSecurityInfo Source = "securityinfo"
	SourceRotation     Source = "rotation"
	SourceImport       Source = "import"
	SourceCheckin      Source = "checkin" // SetBootstrapToken, TokenUpdate
)

// KeyStatus is the state of one key version.
type KeyStatus string

const (
	StatusEscrowed      KeyStatus = "escrowed"
	StatusUndecryptable KeyStatus = "undecryptable"
)

// KeyVersion is the metadata of one version of a device secret. It never
// holds the secret.
type KeyVersion struct {
	ID              int64
	Device          DeviceID
	Kind            SecretKind
	Seq             int // 1, 2, ... per device and kind
	Source          Source
	Status          KeyStatus
	SecretVersion   int    // version in the SecretStore; 0 when undecryptable
	CertFingerprint string // escrow certificate that decrypted it
	CMSSHA256       string // hex SHA-256 of the first CMS seen for this version
	Error           string // why it is undecryptable (names the recipient)
	Warning         string // odd key format, kept anyway
	ReceivedAt      time.Time
	SupersededAt    time.Time
	DisclosedAt     time.Time
	VerifiedAt      time.Time
}

// Current reports whether v is a decrypted version not yet superseded.
func (v KeyVersion) Current() bool {
	return v.Status == StatusEscrowed && v.SupersededAt.IsZero()
}

// OutboxItem is a CMS blob received and not yet escrowed.
type OutboxItem struct {
	ID          int64
	Device      DeviceID
	Serial      string
	Kind        SecretKind
	Source      Source
	CMS         []byte // encrypted to an escrow certificate: safe at rest
	CMSSHA256   string
	ReceivedAt  time.Time
	Attempts    int
	LastError   string
	NextAttempt time.Time
}

// OutboxStats summarises pending work for status pages and metrics.
type OutboxStats struct {
	Pending       int
	OldestPending time.Time
	LastError     string
}

// ActorKind says who acted.
type ActorKind string

const (
	ActorUser   ActorKind = "user"
	ActorToken  ActorKind = "token"
	ActorSystem ActorKind = "system"
	ActorDevice ActorKind = "device"
)

// Actor is who did something.
type Actor struct {
	Kind ActorKind
	ID   string
	Name string
}

func (a Actor) String() string { return string(a.Kind) + ":" + a.ID }

// System is the actor for fvescrow's own jobs.
var System = Actor{Kind: ActorSystem, ID: "fvescrow"}

// IngestResult tells the caller what became of a blob.
type IngestResult struct {
	Version KeyVersion
	// New reports whether a new version was made; false for a blob or key
	// fvescrow already had.
	New bool
	// Pending reports that the secret store was unavailable: the blob waits in
	// the outbox and will be escrowed by the drainer.
	Pending bool
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// keyText is the secret text of a recovery key as stored.
func keyText(k fde.RecoveryKey) []byte { return []byte(k.Expose()) }

// More kinds for the MDM door's own secrets.
const (
	KindSCEPCAKey     SecretKind = "scep-ca-key"    // the SCEP CA private key (PEM)
	KindSCEPChallenge SecretKind = "scep-challenge" // the SCEP challenge password
	KindPushKey       SecretKind = "push-key"       // the APNs push certificate's private key (PEM)
)

// KindTOTP holds a local user's TOTP secret.
const KindTOTP SecretKind = "totp"
