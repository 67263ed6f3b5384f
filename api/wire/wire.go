// Package wire holds the JSON types of fvescrow's REST API (/api/v1), shared
// by the server and the Go client the CLI uses. docs/openapi.yaml documents
// them. Types that carry a secret say so; nothing else ever does.
package wire

import (
	"fmt"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

// Error is the one error format: {"error": {...}}.
type Error struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is a stable code, a message safe to show, and the request ID
// to quote to an admin.
type ErrorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

// LoginRequest signs a local user in to get a personal API token (the CLI's
// `fvescrow login`). NewPassword replaces a one-time password.
type LoginRequest struct {
	Username    string `json:"username"`
	Password    string `json:"password"`
	TOTP        string `json:"totp,omitempty"`
	NewPassword string `json:"new_password,omitempty"`
}

// Validate checks the request's shape.
func (r LoginRequest) Validate() error {
	if r.Username == "" || r.Password == "" {
		return fmt.Errorf("%w: username and password are required", ErrInvalid)
	}
	return nil
}

// LoginResponse carries a new personal API token (secret: shown once).
type LoginResponse struct {
	Token     string    `json:"token"`
	TokenID   string    `json:"token_id"`
	ExpiresAt time.Time `json:"expires_at"`
	Me        Me        `json:"me"`
}

// Me is the signed-in principal.
type Me struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Email       string   `json:"email,omitempty"`
	Roles       []string `json:"roles"`
	Groups      []string `json:"groups,omitempty"`
	Permissions []string `json:"permissions"`
}

// Device is a device's state; never a key.
type Device struct {
	ID           string            `json:"id"`
	UDID         string            `json:"udid,omitempty"`
	Serial       string            `json:"serial,omitempty"`
	Hostname     string            `json:"hostname,omitempty"`
	Model        string            `json:"model,omitempty"`
	OSVersion    string            `json:"os_version,omitempty"`
	Owner        string            `json:"owner,omitempty"`
	OwnerEmail   string            `json:"owner_email,omitempty"`
	Platform     string            `json:"platform,omitempty"`
	EscrowStatus string            `json:"escrow_status,omitempty"`
	FileVault    string            `json:"filevault,omitempty"`
	Attrs        map[string]string `json:"attrs,omitempty"`
	CreatedAt    time.Time         `json:"created_at"`
	UpdatedAt    time.Time         `json:"updated_at"`
	RetiredAt    *time.Time        `json:"retired_at,omitempty"`
}

// DeviceList is a page of devices.
type DeviceList struct {
	Devices []Device `json:"devices"`
	Next    string   `json:"next,omitempty"` // pass as ?after= for the next page
}

// KeyVersion is the metadata of one key version.
type KeyVersion struct {
	Version         int        `json:"version"`
	Status          string     `json:"status"`
	Source          string     `json:"source"`
	Current         bool       `json:"current"`
	CertFingerprint string     `json:"escrow_cert,omitempty"`
	Error           string     `json:"error,omitempty"`
	Warning         string     `json:"warning,omitempty"`
	ReceivedAt      time.Time  `json:"received_at"`
	SupersededAt    *time.Time `json:"superseded_at,omitempty"`
	DisclosedAt     *time.Time `json:"disclosed_at,omitempty"`
	VerifiedAt      *time.Time `json:"verified_at,omitempty"`
}

// Account is a local account of a device.
type Account struct {
	UserName       string `json:"user_name"`
	FullName       string `json:"full_name,omitempty"`
	UID            int64  `json:"uid"`
	HasSecureToken string `json:"has_securetoken"`
	MobileAccount  string `json:"mobile_account"`
	IsLoggedIn     string `json:"is_logged_in"`
}

// Finding is a recoverability finding.
type Finding struct {
	Severity string `json:"severity"`
	Code     string `json:"code"`
	Message  string `json:"message"`
}

// Job is scheduled work for a device (SecurityInfo checks, rotations).
type Job struct {
	Kind     string    `json:"kind"`
	State    string    `json:"state"`
	Step     string    `json:"step,omitempty"`
	RunAt    time.Time `json:"run_at"`
	Attempts int       `json:"attempts"`
	Error    string    `json:"error,omitempty"`
}

// DeviceDetail is the device page.
type DeviceDetail struct {
	Device      Device        `json:"device"`
	KeyVersions []KeyVersion  `json:"key_versions"`
	Accounts    []Account     `json:"accounts"`
	Recoverable bool          `json:"recoverable"`
	Paths       []string      `json:"recovery_paths,omitempty"`
	Findings    []Finding     `json:"findings,omitempty"`
	Jobs        []Job         `json:"jobs,omitempty"`
	Audit       []AuditRecord `json:"audit"`
}

// RevealRequest asks for a device's current recovery key.
type RevealRequest struct {
	Reason     string `json:"reason"`
	Ticket     string `json:"ticket"`
	ApprovalID string `json:"approval_id,omitempty"`
}

// ErrInvalid marks a request that fails validation (HTTP 400).
var ErrInvalid = escrow.ErrInvalid

// Validate requires a reason and a ticket; their rules are the server's.
func (r RevealRequest) Validate() error {
	var missing []string
	if strings.TrimSpace(r.Reason) == "" {
		missing = append(missing, "reason")
	}
	if strings.TrimSpace(r.Ticket) == "" {
		missing = append(missing, "ticket")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s required", ErrInvalid, strings.Join(missing, " and "))
	}
	return nil
}

// RevealResponse carries a recovery key. SECRET: never log or store it.
type RevealResponse struct {
	Key         string    `json:"key"`
	Device      string    `json:"device"`
	Serial      string    `json:"serial,omitempty"`
	Version     int       `json:"version"`
	AuditSeq    int64     `json:"audit_seq"`
	DisclosedAt time.Time `json:"disclosed_at"`
	Warning     string    `json:"warning,omitempty"`
}

// ApprovalRequest asks a second person to approve a reveal.
type ApprovalRequest struct {
	Reason string `json:"reason"`
	Ticket string `json:"ticket"`
}

// Validate requires a reason and a ticket.
func (r ApprovalRequest) Validate() error {
	return RevealRequest{Reason: r.Reason, Ticket: r.Ticket}.Validate()
}

// Decision approves or denies.
type Decision struct {
	Note string `json:"note,omitempty"`
}

// Validate bounds the note.
func (d Decision) Validate() error {
	if len(d.Note) > 500 {
		return fmt.Errorf("%w: a note is at most 500 characters", ErrInvalid)
	}
	return nil
}

// Approval is a two-person approval.
type Approval struct {
	ID        string     `json:"id"`
	Device    string     `json:"device"`
	Requester string     `json:"requester"`
	Reason    string     `json:"reason"`
	Ticket    string     `json:"ticket"`
	State     string     `json:"state"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	Approver  string     `json:"approver,omitempty"`
	DecidedAt *time.Time `json:"decided_at,omitempty"`
	Note      string     `json:"note,omitempty"`
	UseBy     *time.Time `json:"use_by,omitempty"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
}

// AuditRecord is one audit record with its chain hashes.
type AuditRecord struct {
	Seq       int64             `json:"seq"`
	Time      time.Time         `json:"time"`
	ActorKind string            `json:"actor_kind"`
	ActorID   string            `json:"actor_id"`
	ActorName string            `json:"actor_name,omitempty"`
	Action    string            `json:"action"`
	Device    string            `json:"device,omitempty"`
	Reason    string            `json:"reason,omitempty"`
	Ticket    string            `json:"ticket,omitempty"`
	Detail    map[string]string `json:"detail,omitempty"`
	PrevHash  string            `json:"prev_hash"`
	Hash      string            `json:"hash"`
}

// AuditList is a page of audit records.
type AuditList struct {
	Records []AuditRecord `json:"records"`
	Next    int64         `json:"next,omitempty"` // pass as ?after= for the next page
}

// TokenRequest creates an API token.
type TokenRequest struct {
	Name           string   `json:"name"`
	Roles          []string `json:"roles,omitempty"` // default: all of the creator's roles
	ExpiresInHours int      `json:"expires_in_hours,omitempty"`
}

// Validate checks the request.
func (r TokenRequest) Validate() error {
	if strings.TrimSpace(r.Name) == "" || len(r.Name) > 100 {
		return fmt.Errorf("%w: a token name of 1 to 100 characters is required", ErrInvalid)
	}
	if r.ExpiresInHours < 0 || r.ExpiresInHours > 24*366 {
		return fmt.Errorf("%w: expires_in_hours must be 0..8784", ErrInvalid)
	}
	return nil
}

// Token is an API token's metadata.
type Token struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Owner      string     `json:"owner"`
	Roles      []string   `json:"roles"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// TokenCreated carries a new token. SECRET: shown once.
type TokenCreated struct {
	Token string `json:"token"`
	Info  Token  `json:"info"`
}

// UserRequest creates a local user.
type UserRequest struct {
	Username    string   `json:"username"`
	DisplayName string   `json:"display_name,omitempty"`
	Email       string   `json:"email,omitempty"`
	Roles       []string `json:"roles"`
	TOTP        bool     `json:"totp,omitempty"`
}

// Validate checks the request's shape (the server checks the rest).
func (r UserRequest) Validate() error {
	if r.Username == "" || len(r.Roles) == 0 {
		return fmt.Errorf("%w: username and roles are required", ErrInvalid)
	}
	return nil
}

// User is a user record (no credentials).
type User struct {
	ID          string     `json:"id"`
	Username    string     `json:"username"`
	DisplayName string     `json:"display_name,omitempty"`
	Email       string     `json:"email,omitempty"`
	Source      string     `json:"source"`
	Roles       []string   `json:"roles"`
	TOTP        bool       `json:"totp"`
	Disabled    bool       `json:"disabled"`
	LastLoginAt *time.Time `json:"last_login_at,omitempty"`
}

// UserCreated carries a new user's one-time password (SECRET: shown once).
type UserCreated struct {
	User            User   `json:"user"`
	OneTimePassword string `json:"one_time_password"`
	TOTPURI         string `json:"totp_uri,omitempty"`
}

// UserUpdate changes a user.
type UserUpdate struct {
	Roles    []string `json:"roles,omitempty"`
	Disabled *bool    `json:"disabled,omitempty"`
}

// Notification is a queued or sent notification.
type Notification struct {
	ID          int64      `json:"id"`
	Channel     string     `json:"channel"`
	Target      string     `json:"target"`
	Subject     string     `json:"subject"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	LastError   string     `json:"last_error,omitempty"`
	AuditSeq    int64      `json:"audit_seq,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
}
