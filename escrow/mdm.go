package escrow

import (
	"context"
	"time"

	"github.com/fvescrow/fvescrow/token"
)

// Persistence the MDM door needs: the commands fvescrow sent (a result does
// not say which request it answers), scheduled work per device, and the
// local-account inventory from UserList.

// Command is an MDM command fvescrow enqueued, tracked until answered. It
// never holds the command body.
type Command struct {
	UUID        string
	Device      DeviceID
	RequestType string
	Purpose     string // why it was sent: "enrollment", "escrow-check", "inventory", "manual", "rotation"
	JobID       int64
	EnqueuedAt  time.Time
	Status      string // "" until answered; then the device's last status
	AnsweredAt  time.Time
	Error       string // ErrorChain summary of an Error answer
}

// CommandStore tracks enqueued commands.
type CommandStore interface {
	// RecordCommand stores a command before it is enqueued.
	RecordCommand(ctx context.Context, c Command) error
	// Command returns the command with uuid sent to a device, or
	// ErrNotFound. One UUID may go to several devices.
	Command(ctx context.Context, id DeviceID, uuid string) (Command, error)
	// AnswerCommand records the device's answer (the latest wins) and
	// returns the command.
	AnswerCommand(ctx context.Context, id DeviceID, uuid, status, errText string, at time.Time) (Command, error)
	// Commands lists a device's commands, newest first.
	Commands(ctx context.Context, id DeviceID, limit int) ([]Command, error)
}

// JobState is where a job is.
type JobState string

const (
	JobPending  JobState = "pending"  // due at RunAt
	JobWaiting  JobState = "waiting"  // sent; waiting for the device (RunAt is the timeout)
	JobDone     JobState = "done"     // finished
	JobFailed   JobState = "failed"   // gave up; Error says why
	JobCanceled JobState = "canceled" // superseded or the device went away
)

// Job is scheduled work for one device, such as the next SecurityInfo check
// or a key rotation. There is at most one open (pending or waiting) job per
// kind and device.
type Job struct {
	ID        int64
	Kind      string
	Device    DeviceID
	State     JobState
	Step      string // the job's own progress marker
	RunAt     time.Time
	Attempts  int
	Error     string
	Data      map[string]string // non-secret job data
	Campaign  int64             // the rotation campaign it belongs to (0: none)
	Ref       int64             // the key version it is about (0: none)
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Open reports whether the job is pending or waiting.
func (j Job) Open() bool { return j.State == JobPending || j.State == JobWaiting }

// JobQuery selects jobs.
type JobQuery struct {
	Kind     string
	Device   DeviceID
	States   []JobState
	Campaign int64
	Limit    int // default 100
}

// JobStore keeps jobs. Claims are leases, so replicas never run the same
// job at once (FOR UPDATE SKIP LOCKED on PostgreSQL).
type JobStore interface {
	// PutJob creates a job, or updates the open job of the same kind and
	// device (keeping its ID and CreatedAt).
	PutJob(ctx context.Context, j Job) (Job, error)
	// ClaimJobs leases up to limit jobs of kind that are open and due.
	ClaimJobs(ctx context.Context, kind, owner string, now, leaseUntil time.Time, limit int) ([]Job, error)
	// UpdateJob saves j by ID and releases its lease.
	UpdateJob(ctx context.Context, j Job) error
	// OpenJob returns the open job of a kind for a device, or ErrNotFound.
	OpenJob(ctx context.Context, kind string, id DeviceID) (Job, error)
	// Jobs lists jobs, newest first.
	Jobs(ctx context.Context, q JobQuery) ([]Job, error)
}

// AccountChange is one recorded change of a device's account inventory.
type AccountChange struct {
	Device DeviceID
	token.Change
	At time.Time
}

// AccountStore keeps the local-account inventory and its history.
type AccountStore interface {
	// ReplaceAccounts stores a device's accounts as reported at time at,
	// records the changes from the previous inventory, and returns them.
	ReplaceAccounts(ctx context.Context, id DeviceID, accounts []token.Account, at time.Time) ([]token.Change, error)
	// Accounts returns the current inventory and when it was reported.
	Accounts(ctx context.Context, id DeviceID) ([]token.Account, time.Time, error)
	// AccountHistory lists a device's changes, newest first.
	AccountHistory(ctx context.Context, id DeviceID, limit int) ([]AccountChange, error)
}

// EventStore remembers processed webhook events so a replay is a no-op.
type EventStore interface {
	// MarkEvent records id and reports whether it was new.
	MarkEvent(ctx context.Context, id string, at time.Time) (bool, error)
	// ForgetEvent removes id (an event whose processing failed), so that
	// a redelivery is processed. Forgetting an unknown id is not an error.
	ForgetEvent(ctx context.Context, id string) error
}

// MutableSettings are settings an operator may replace (the APNs topic
// after a push certificate renewal), unlike create-once settings.
type MutableSettings interface {
	PutSetting(ctx context.Context, name string, value []byte) error
}
