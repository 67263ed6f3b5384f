package escrow

import (
	"context"
	"time"
)

// ApprovalState is where a two-person approval is.
type ApprovalState string

const (
	ApprovalPending  ApprovalState = "pending"
	ApprovalApproved ApprovalState = "approved"
	ApprovalDenied   ApprovalState = "denied"
	ApprovalUsed     ApprovalState = "used"
	ApprovalExpired  ApprovalState = "expired" // reported, not stored: derived from the times
)

// Approval is a reveal request that needs a second person. It is bound to
// its requester, device, reason and ticket, expires, and is single-use.
type Approval struct {
	ID           string
	Device       DeviceID
	Requester    Actor
	Reason       string
	Ticket       string
	State        ApprovalState
	CreatedAt    time.Time
	ExpiresAt    time.Time // a pending request expires
	Approver     Actor
	DecidedAt    time.Time
	DecisionNote string
	UseBy        time.Time // an approved request must be used before this
	UsedAt       time.Time
}

// Effective is the state at time at, with expiry applied.
func (a Approval) Effective(at time.Time) ApprovalState {
	switch {
	case a.State == ApprovalPending && !at.Before(a.ExpiresAt):
		return ApprovalExpired
	case a.State == ApprovalApproved && !at.Before(a.UseBy):
		return ApprovalExpired
	}
	return a.State
}

// ApprovalQuery selects approvals.
type ApprovalQuery struct {
	RequesterID string
	Device      DeviceID
	States      []ApprovalState // stored states
	Limit       int
}

// ApprovalStore keeps approvals. Decide and Use check their rules inside the
// transaction that changes the state and append the audit event with it.
type ApprovalStore interface {
	CreateApproval(ctx context.Context, a Approval, e Event) error
	Approval(ctx context.Context, id string) (Approval, error)
	Approvals(ctx context.Context, q ApprovalQuery) ([]Approval, error)
	// DecideApproval moves a pending, unexpired approval to approved (with
	// useBy) or denied. ErrConflict if it is not pending or expired;
	// ErrForbidden if approver is the requester.
	DecideApproval(ctx context.Context, id string, approver Actor, approve bool, note string, at, useBy time.Time, e Event) (Approval, error)
	// UseApproval consumes an approved, unexpired, unused approval for its
	// own requester and device. ErrForbidden for anyone else or another
	// device; ErrConflict when not approved, used or expired.
	UseApproval(ctx context.Context, id string, requester Actor, device DeviceID, at time.Time) (Approval, error)
}

// Block stops an operator from revealing keys, after a rate limit or by an
// admin, until it is lifted or runs out.
type Block struct {
	ActorID   string
	Reason    string
	CreatedAt time.Time
	Until     time.Time // zero: until lifted
	LiftedAt  time.Time
	LiftedBy  string
}

// BlockStore keeps operator blocks.
type BlockStore interface {
	// BlockActor records a block and appends e, atomically.
	BlockActor(ctx context.Context, b Block, e Event) error
	// ActiveBlock returns the block in force for an actor at t, or
	// ErrNotFound.
	ActiveBlock(ctx context.Context, actorID string, at time.Time) (Block, error)
	// LiftBlocks lifts every active block of an actor and appends e.
	LiftBlocks(ctx context.Context, actorID string, by Actor, at time.Time, e Event) error
}
