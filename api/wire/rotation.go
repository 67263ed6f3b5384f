package wire

import (
	"fmt"
	"strings"
	"time"
)

// Rotation is a device's key rotation: where it is in
// scheduled → queued → sent → acknowledged → escrowed → verified, or failed
// (with the reason) or canceled.
type Rotation struct {
	ID          int64      `json:"id"`
	Device      string     `json:"device"`
	State       string     `json:"state"`
	Trigger     string     `json:"trigger"`
	RequestedBy string     `json:"requested_by,omitempty"`
	Campaign    int64      `json:"campaign,omitempty"`
	RunAt       time.Time  `json:"run_at"`
	Attempts    int        `json:"attempts"`
	Error       string     `json:"error,omitempty"`
	NewVersion  string     `json:"new_version,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
}

// RotationList is a page of rotations.
type RotationList struct {
	Rotations []Rotation `json:"rotations"`
}

// RotateRequest asks for one device's key to be rotated now.
type RotateRequest struct {
	Reason string `json:"reason"`
}

// Validate checks the request.
func (r RotateRequest) Validate() error {
	if strings.TrimSpace(r.Reason) == "" {
		return fmt.Errorf("%w: a reason is required", ErrInvalid)
	}
	return nil
}

// OverdueKey is a current key disclosed longer ago than asked, with its
// rotation, if any.
type OverdueKey struct {
	Device      string    `json:"device"`
	Serial      string    `json:"serial,omitempty"`
	Version     int       `json:"version"`
	DisclosedAt time.Time `json:"disclosed_at"`
	Rotation    *Rotation `json:"rotation,omitempty"`
}

// OverdueList is the fleet view of disclosed keys not rotated yet.
type OverdueList struct {
	OlderThanHours float64      `json:"older_than_hours"`
	Keys           []OverdueKey `json:"keys"`
}

// CampaignRequest starts a rotation campaign: the named devices, or the
// devices a search matches ("" matches all), optionally only keys older than
// KeyOlderThanDays or only disclosed keys.
type CampaignRequest struct {
	Name             string   `json:"name"`
	Reason           string   `json:"reason"`
	Devices          []string `json:"devices,omitempty"`
	Search           string   `json:"search,omitempty"`
	KeyOlderThanDays int      `json:"key_older_than_days,omitempty"`
	DisclosedOnly    bool     `json:"disclosed_only,omitempty"`
}

// Validate checks the request.
func (r CampaignRequest) Validate() error {
	var errs []string
	if strings.TrimSpace(r.Name) == "" {
		errs = append(errs, "a name is required")
	}
	if strings.TrimSpace(r.Reason) == "" {
		errs = append(errs, "a reason is required")
	}
	if r.KeyOlderThanDays < 0 {
		errs = append(errs, "key_older_than_days must not be negative")
	}
	if len(r.Devices) > 100000 {
		errs = append(errs, "at most 100000 devices")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// Campaign is a rotation campaign with its progress: jobs by state
// (scheduled, queued, sent, acknowledged, escrowed, verified, retrying,
// failed, canceled) and failures by reason.
type Campaign struct {
	ID        int64          `json:"id"`
	Name      string         `json:"name"`
	Reason    string         `json:"reason"`
	Filter    string         `json:"filter"`
	CreatedBy string         `json:"created_by"`
	CreatedAt time.Time      `json:"created_at"`
	Devices   int            `json:"devices"`
	Skipped   int            `json:"skipped"`
	States    map[string]int `json:"states,omitempty"`
	Failures  map[string]int `json:"failures,omitempty"`
	Done      bool           `json:"done"`
}

// CampaignList lists campaigns (without progress).
type CampaignList struct {
	Campaigns []Campaign `json:"campaigns"`
}

// Regeneration is a Mac whose key an agent (Escrow Buddy) must regenerate.
type Regeneration struct {
	Device    string     `json:"device"`
	Serial    string     `json:"serial,omitempty"`
	Reason    string     `json:"reason"`
	Since     time.Time  `json:"since"`
	ClearedAt *time.Time `json:"cleared_at,omitempty"`
}

// RegenerationList is what agents poll.
type RegenerationList struct {
	Devices []Regeneration `json:"devices"`
}
