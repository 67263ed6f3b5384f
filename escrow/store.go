package escrow

import (
	"context"
	"crypto/x509"
	"time"
)

// SecretStore keeps secrets, versioned. Versions are never overwritten or
// deleted: Put adds a version, Get reads one.
type SecretStore interface {
	// Put writes a new version of ref and returns its number (1, 2, ...).
	// cas is the version the caller believes is the latest (0: none yet);
	// when it is not, Put returns ErrConflict and writes nothing.
	Put(ctx context.Context, ref SecretRef, secret []byte, cas int, meta SecretMeta) (int, error)
	// Get reads version v of ref (0: the latest) and returns it with its
	// number. ErrNotFound when ref or the version does not exist.
	Get(ctx context.Context, ref SecretRef, v int) ([]byte, int, error)
}

// DeviceStore keeps device records.
type DeviceStore interface {
	// UpsertDevice creates the device or merges the non-empty fields of d
	// into it (Attrs are merged key by key) and returns the stored record.
	UpsertDevice(ctx context.Context, d Device) (Device, error)
	// Device returns one device, or ErrNotFound.
	Device(ctx context.Context, id DeviceID) (Device, error)
	// FindDevices searches devices.
	FindDevices(ctx context.Context, q DeviceQuery) ([]Device, error)
	// RetireDevice marks a device retired and appends e, atomically.
	RetireDevice(ctx context.Context, id DeviceID, e Event) (AuditRecord, error)
}

// DeviceQuery selects devices. Text matches ID, UDID, serial, hostname,
// owner and owner e-mail (case-insensitive substring); empty matches all.
type DeviceQuery struct {
	Text           string
	IncludeRetired bool
	Limit          int // default 100
	AfterID        DeviceID
}

// KeyRecord is one atomic change of key metadata: the device upserted, a
// version added (or a new CMS attached to an existing version), the previous
// current version superseded, the audit event appended and the outbox item
// cleared, all or nothing.
type KeyRecord struct {
	Device  Device
	Version KeyVersion // Device, Kind, Source, Status, SecretVersion, CertFingerprint, CMSSHA256, Error, Warning, ReceivedAt
	CMS     []byte     // the blob as received, kept with the version (encrypted, safe at rest)
	// SameAs attaches the CMS to this existing version instead of adding one:
	// the blob decrypted to a key fvescrow already holds.
	SameAs int64
	// Verify marks the version verified (the device itself reported the
	// key): the SameAs version, or the new escrowed version.
	Verify   bool
	OutboxID int64 // outbox item to clear; 0 for none
	Event    Event
}

// KeyStore keeps key-version metadata.
type KeyStore interface {
	// KeyVersions lists a device's versions of a kind, oldest first.
	KeyVersions(ctx context.Context, id DeviceID, kind SecretKind) ([]KeyVersion, error)
	// KeyVersionByCMS finds the version a CMS blob (by SHA-256) belongs to.
	KeyVersionByCMS(ctx context.Context, id DeviceID, cmsSHA256 string) (KeyVersion, error)
	// RecordKey applies r atomically. If r's CMS is already known for the
	// device, nothing changes but the outbox item is cleared, and the
	// existing version is returned with created false.
	RecordKey(ctx context.Context, r KeyRecord) (v KeyVersion, created bool, err error)
	// RecordReveal marks a version disclosed (first time only) and appends e,
	// atomically, returning the audit record.
	RecordReveal(ctx context.Context, versionID int64, e Event) (AuditRecord, error)
	// WithdrawKey supersedes the device's current version of kind with no
	// successor and appends e, atomically: afterwards the device has no
	// current version of kind until a new one is recorded. The version (and
	// its secret) stays. e's Detail gains the withdrawn version's "version"
	// (Seq) and "secret_version". With no current version it changes
	// nothing, appends nothing and returns false.
	WithdrawKey(ctx context.Context, id DeviceID, kind SecretKind, e Event) (v KeyVersion, withdrawn bool, err error)
}

// OutboxStore keeps received blobs until they are escrowed.
type OutboxStore interface {
	// PutOutbox stores an item; the same device and CMS SHA-256 again returns
	// the existing item.
	PutOutbox(ctx context.Context, it OutboxItem) (OutboxItem, error)
	// ClaimOutbox leases up to limit items due at now to owner until
	// leaseUntil, so replicas do not process the same item at once.
	ClaimOutbox(ctx context.Context, owner string, now, leaseUntil time.Time, limit int) ([]OutboxItem, error)
	// FailOutbox records a failed attempt and when to try again.
	FailOutbox(ctx context.Context, id int64, msg string, next time.Time) error
	// OutboxStats summarises pending items.
	OutboxStats(ctx context.Context) (OutboxStats, error)
}

// AuditQuery selects audit records. Zero fields match everything.
type AuditQuery struct {
	AfterSeq int64
	Device   DeviceID
	ActorID  string
	Action   string
	Since    time.Time
	Until    time.Time
	Limit    int // default 1000
}

// AuditStore keeps the hash-chained audit log.
type AuditStore interface {
	// AppendAudit appends e as the next record (computing its chain hash
	// with NextRecord in the same transaction).
	AppendAudit(ctx context.Context, e Event) (AuditRecord, error)
	// AuditRecords lists records in Seq order.
	AuditRecords(ctx context.Context, q AuditQuery) ([]AuditRecord, error)
	// CountAudit counts the records q selects (Limit is ignored).
	CountAudit(ctx context.Context, q AuditQuery) (int, error)
	// AuditHead returns the last record, or ErrNotFound for an empty log.
	AuditHead(ctx context.Context) (AuditRecord, error)
	AddCheckpoint(ctx context.Context, c Checkpoint) error
	// Checkpoints lists checkpoints in Seq order.
	Checkpoints(ctx context.Context) ([]Checkpoint, error)
}

// EscrowCert is an escrow certificate ever deployed (public).
type EscrowCert struct {
	Fingerprint string
	Certificate *x509.Certificate
	AddedAt     time.Time
}

// EscrowCertStore keeps the public half of the keyring.
type EscrowCertStore interface {
	// AddEscrowCert stores a certificate; adding it again is a no-op.
	AddEscrowCert(ctx context.Context, c EscrowCert) error
	EscrowCerts(ctx context.Context) ([]EscrowCert, error)
}

// SettingStore keeps small named values fvescrow creates once (the audit
// public key). Values are never secret.
type SettingStore interface {
	// Setting returns a value or ErrNotFound.
	Setting(ctx context.Context, name string) ([]byte, error)
	// CreateSetting stores a value; ErrConflict if the name exists.
	CreateSetting(ctx context.Context, name string, value []byte) error
}

// MetaStore is everything the metadata database keeps.
type MetaStore interface {
	DeviceStore
	KeyStore
	OutboxStore
	AuditStore
	EscrowCertStore
	SettingStore
}
