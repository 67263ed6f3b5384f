// Package mdm is fvescrow's MDM door: nanomdm wiring for the embedded server
// (SCEP, device endpoints, the enqueue API) and the escrow capture that both
// the embedded server and companion mode (nanomdm/MicroMDM webhooks) feed.
//
// Capture turns MDM traffic into escrow: on enrollment it installs the
// FileVault escrow profile and asks for SecurityInfo and UserList; a
// SecurityInfo answer's FDE_PersonalRecoveryKeyCMS goes to the outbox before
// the answer is acknowledged, then to escrow.Service; bootstrap and unlock
// tokens go to the secret store, never to nanomdm's tables in clear.
package mdm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/token"
	"github.com/micromdm/plist"
)

// Keys is Capture's view of the escrow service for recovery keys.
type Keys interface {
	Receive(ctx context.Context, d escrow.Device, cms []byte, src escrow.Source) (escrow.OutboxItem, error)
	EscrowReceived(ctx context.Context, d escrow.Device, it escrow.OutboxItem) (escrow.IngestResult, error)
	KeyVersions(ctx context.Context, id escrow.DeviceID, kind escrow.SecretKind) ([]escrow.KeyVersion, error)
}

// Tokens keeps bootstrap and unlock tokens.
type Tokens interface {
	PutToken(ctx context.Context, d escrow.Device, kind escrow.SecretKind, token []byte, src escrow.Source) (escrow.IngestResult, error)
	Token(ctx context.Context, actor escrow.Actor, id escrow.DeviceID, kind escrow.SecretKind) ([]byte, error)
	WithdrawToken(ctx context.Context, actor escrow.Actor, id escrow.DeviceID, kind escrow.SecretKind) (bool, error)
}

// Devices records what Capture learns about devices.
type Devices interface {
	UpsertDevice(ctx context.Context, d escrow.Device) (escrow.Device, error)
	Device(ctx context.Context, id escrow.DeviceID) (escrow.Device, error)
}

// Store is the MDM door's own persistence.
type Store interface {
	escrow.CommandStore
	escrow.JobStore
	escrow.AccountStore
}

// Enqueuer hands commands to the MDM server's queue and wakes devices.
type Enqueuer interface {
	// Enqueue queues cmd for a device and sends a push.
	Enqueue(ctx context.Context, id escrow.DeviceID, cmd fde.Command) error
	// Push wakes a device without queueing anything.
	Push(ctx context.Context, id escrow.DeviceID) error
}

// ProfileSource returns the FileVault escrow profile to install (built with
// the current escrow certificate).
type ProfileSource func(ctx context.Context) ([]byte, error)

// JobEscrowCheck is the per-device job that asks for SecurityInfo until the
// key is escrowed, then daily.
const JobEscrowCheck = "escrow-check"

// Purposes recorded with commands.
const (
	PurposeEnrollment  = "enrollment"
	PurposeEscrowCheck = "escrow-check"
	PurposeManual      = "manual"
)

// ErrUnknownCommand is a result for a CommandUUID fvescrow never sent.
var ErrUnknownCommand = errors.New("result for an unknown command")

// Capture is the escrow logic of the MDM door. It is safe for concurrent use.
type Capture struct {
	keys     Keys
	tokens   Tokens
	devices  Devices
	store    Store
	enqueuer Enqueuer
	profile  ProfileSource
	log      *slog.Logger
	now      func() time.Time
	owner    string
	// backoff is the delay before the next SecurityInfo while no key has
	// arrived, by attempt; the last entry repeats.
	backoff []time.Duration
	daily   time.Duration // recheck after a key is escrowed or FileVault is off
	answer  time.Duration // how long to wait for an answer before pushing again
	// resendAfter is how many pushes an unanswered check gets before it
	// is sent again (0: never; the embedded server sees every answer).
	resendAfter int
	rot         *RotationConfig
}

// Option configures Capture.
type Option func(*Capture)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(c *Capture) { c.log = l.With("component", "mdm-capture") }
}

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(c *Capture) { c.now = now } }

// WithSchedule sets the SecurityInfo backoff, the recheck interval once a
// key is escrowed, and how long to wait for an answer before re-pushing.
func WithSchedule(backoff []time.Duration, recheck, answer time.Duration) Option {
	return func(c *Capture) { c.backoff, c.daily, c.answer = backoff, recheck, answer }
}

// WithResendAfter has an escrow check that is still unanswered after
// pushes pushes sent again. Companion mode needs it: the MDM server sends
// each answer to fvescrow once, and a lost webhook would otherwise leave
// the check waiting forever.
func WithResendAfter(pushes int) Option { return func(c *Capture) { c.resendAfter = pushes } }

// WithReplicaID names this process when it claims jobs.
func WithReplicaID(id string) Option { return func(c *Capture) { c.owner = id } }

// NewCapture returns the capture logic.
func NewCapture(keys Keys, tokens Tokens, devices Devices, store Store, enq Enqueuer, profile ProfileSource, opts ...Option) *Capture {
	if keys == nil || tokens == nil || devices == nil || store == nil || enq == nil || profile == nil {
		panic("mdm.NewCapture: nil dependency")
	}
	c := &Capture{
		keys: keys, tokens: tokens, devices: devices, store: store, enqueuer: enq, profile: profile,
		log: slog.New(slog.DiscardHandler), now: time.Now, owner: "fvescrow",
		backoff: []time.Duration{5 * time.Minute, 15 * time.Minute, time.Hour, 4 * time.Hour, 12 * time.Hour},
		daily:   24 * time.Hour,
		answer:  time.Hour,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// deviceActor is the device as the audit log names it.
func deviceActor(id escrow.DeviceID) escrow.Actor {
	return escrow.Actor{Kind: escrow.ActorDevice, ID: string(id)}
}

// authenticateInfo is what fvescrow keeps from an Authenticate message.
type authenticateInfo struct {
	SerialNumber string `plist:"SerialNumber"`
	DeviceName   string `plist:"DeviceName"`
	Model        string `plist:"Model"`
	ModelName    string `plist:"ModelName"`
	ProductName  string `plist:"ProductName"`
	OSVersion    string `plist:"OSVersion"`
	BuildVersion string `plist:"BuildVersion"`
	UDID         string `plist:"UDID"`
}

func platformOf(product, model string) string {
	p := product + " " + model
	switch {
	case strings.Contains(p, "iPhone"), strings.Contains(p, "iPad"), strings.Contains(p, "iPod"):
		return "iOS"
	case strings.Contains(p, "Watch"):
		return "watchOS"
	case strings.Contains(p, "AppleTV"):
		return "tvOS"
	}
	return "macOS"
}

// attrEnrollmentEventAt is when (by the MDM server's clock) the TokenUpdate
// that started the current enrollment workflow was sent, in companion mode.
const attrEnrollmentEventAt = "enrollment_event_at"

// Authenticate records a (re-)enrollment. The enrollment workflow starts at
// the next TokenUpdate.
func (c *Capture) Authenticate(ctx context.Context, id escrow.DeviceID, raw []byte) error {
	return c.AuthenticateAt(ctx, id, raw, time.Time{})
}

// AuthenticateAt is Authenticate for an event the MDM server sent at at
// (companion mode, where events can arrive out of order): an Authenticate
// older than the TokenUpdate that started the current workflow is that
// workflow's own, arriving late, and only updates the inventory.
func (c *Capture) AuthenticateAt(ctx context.Context, id escrow.DeviceID, raw []byte, at time.Time) error {
	var info authenticateInfo
	_ = plist.Unmarshal(raw, &info) // the fields are informative; nanomdm already parsed the message
	d := escrow.Device{
		ID: id, UDID: info.UDID, Serial: info.SerialNumber, Hostname: info.DeviceName,
		Model: strings.TrimSpace(info.Model + " " + info.ModelName), OSVersion: strings.TrimSpace(info.OSVersion + " " + info.BuildVersion),
		Platform: platformOf(info.ProductName, info.Model),
		// A new identity has proven nothing yet (see AttrKeyProvenAt).
		Attrs: map[string]string{escrow.AttrEnrollmentState: "authenticated", escrow.AttrKeyProvenAt: ""},
	}
	if !at.IsZero() {
		if cur, err := c.devices.Device(ctx, id); err == nil {
			if started, err := time.Parse(time.RFC3339Nano, cur.Attrs[attrEnrollmentEventAt]); err == nil && !at.After(started) {
				d.Attrs = nil
				c.log.DebugContext(ctx, "Authenticate arrived after the TokenUpdate it preceded; enrollment state kept", "device", id)
			}
		}
	}
	if _, err := c.devices.UpsertDevice(ctx, d); err != nil {
		return fmt.Errorf("capture: authenticate %s: %w", id, err)
	}
	c.log.InfoContext(ctx, "device authenticated", "device", id, "serial", info.SerialNumber)
	if d.Attrs == nil {
		return nil // a late copy of the current enrollment's Authenticate
	}
	return c.rotationReenrolled(ctx, id)
}

// EscrowUnlockToken escrows an iOS UnlockToken (TokenUpdate) before the
// MDM server acknowledges the message that carried it.
func (c *Capture) EscrowUnlockToken(ctx context.Context, id escrow.DeviceID, tok []byte) error {
	if len(tok) == 0 {
		return nil
	}
	d, _ := c.devices.Device(ctx, id)
	if _, err := c.tokens.PutToken(ctx, escrow.Device{ID: id, Serial: d.Serial}, escrow.KindUnlockToken, tok, escrow.SourceCheckin); err != nil {
		return fmt.Errorf("capture: escrow unlock token of %s: %w", id, err)
	}
	return nil
}

// TokenUpdate starts the escrow workflow on the first TokenUpdate after
// Authenticate (later ones only refresh push details, which nanomdm keeps).
func (c *Capture) TokenUpdate(ctx context.Context, id escrow.DeviceID) error {
	return c.TokenUpdateAt(ctx, id, time.Time{})
}

// TokenUpdateAt is TokenUpdate for an event the MDM server sent at at
// (companion mode).
func (c *Capture) TokenUpdateAt(ctx context.Context, id escrow.DeviceID, at time.Time) error {
	d, err := c.devices.Device(ctx, id)
	if errors.Is(err, escrow.ErrNotFound) {
		// Enrolled before fvescrow watched (companion mode): treat as new.
		d = escrow.Device{ID: id}
	} else if err != nil {
		return fmt.Errorf("capture: token update %s: %w", id, err)
	}
	// No state yet: a device fvescrow knows only from an escrowed token
	// (the UnlockToken of this very TokenUpdate) or one that enrolled
	// before fvescrow watched. Both are new enrollments.
	if st := d.Attrs[escrow.AttrEnrollmentState]; st != "" && st != "authenticated" {
		return nil
	}
	return c.enroll(ctx, d, at)
}

// enroll sends the escrow profile, SecurityInfo and UserList, and schedules
// the follow-up. The device is "enrolled" only once all of that is queued:
// until then the next TokenUpdate starts over.
func (c *Capture) enroll(ctx context.Context, d escrow.Device, at time.Time) error {
	now := c.now()
	if _, err := c.devices.UpsertDevice(ctx, escrow.Device{ID: d.ID, Attrs: map[string]string{
		escrow.AttrEscrowStatus: string(escrow.EscrowProfilePending),
	}}); err != nil {
		return fmt.Errorf("capture: enroll %s: %w", d.ID, err)
	}
	profile, err := c.profile(ctx)
	if err != nil {
		return fmt.Errorf("capture: enroll %s: escrow profile: %w", d.ID, err)
	}
	install, err := fde.NewInstallProfile(profile)
	if err != nil {
		return err
	}
	if err := c.send(ctx, d.ID, install, PurposeEnrollment, 0); err != nil {
		return err
	}
	j, err := c.store.PutJob(ctx, escrow.Job{Kind: JobEscrowCheck, Device: d.ID, State: escrow.JobPending, RunAt: now})
	if err != nil {
		return fmt.Errorf("capture: enroll %s: schedule: %w", d.ID, err)
	}
	if err := c.runCheck(ctx, j, true); err != nil {
		return err
	}
	attrs := map[string]string{escrow.AttrEnrollmentState: "enrolled", escrow.AttrEnrolledAt: now.UTC().Format(time.RFC3339)}
	if !at.IsZero() {
		attrs[attrEnrollmentEventAt] = at.UTC().Format(time.RFC3339Nano)
	}
	if _, err := c.devices.UpsertDevice(ctx, escrow.Device{ID: d.ID, Attrs: attrs}); err != nil {
		return fmt.Errorf("capture: enroll %s: %w", d.ID, err)
	}
	c.log.InfoContext(ctx, "enrollment: escrow profile, SecurityInfo and UserList sent", "device", d.ID)
	return nil
}

// send records a command, then enqueues it.
func (c *Capture) send(ctx context.Context, id escrow.DeviceID, cmd fde.Command, purpose string, jobID int64) error {
	if err := c.store.RecordCommand(ctx, escrow.Command{UUID: cmd.UUID, Device: id, RequestType: cmd.RequestType, Purpose: purpose, JobID: jobID, EnqueuedAt: c.now()}); err != nil {
		return fmt.Errorf("capture: record %v: %w", cmd, err)
	}
	if err := c.enqueuer.Enqueue(ctx, id, cmd); err != nil {
		return fmt.Errorf("capture: enqueue %v for %s: %w", cmd, id, err)
	}
	return nil
}

// CheckOut records that the device left management and stops its checks.
func (c *Capture) CheckOut(ctx context.Context, id escrow.DeviceID) error {
	if _, err := c.devices.UpsertDevice(ctx, escrow.Device{ID: id, Attrs: map[string]string{escrow.AttrEnrollmentState: "checked-out"}}); err != nil {
		return err
	}
	if j, err := c.store.OpenJob(ctx, JobEscrowCheck, id); err == nil {
		j.State, j.Error = escrow.JobCanceled, "device checked out"
		if err := c.store.UpdateJob(ctx, j); err != nil {
			return err
		}
	}
	return c.rotationCheckedOut(ctx, id)
}

// SetBootstrapToken escrows a bootstrap token. A missing or empty token is
// the Mac asking for its bootstrap token to be removed (Apple's check-in
// schema): the escrowed token is withdrawn, so GetBootstrapToken serves
// nothing until the Mac sets a new one. Nothing is deleted: the withdrawn
// version and its secret are kept, and the withdrawal is audited.
func (c *Capture) SetBootstrapToken(ctx context.Context, id escrow.DeviceID, tok []byte) error {
	if len(tok) == 0 {
		withdrawn, err := c.tokens.WithdrawToken(ctx, deviceActor(id), id, escrow.KindBootstrapToken)
		if err != nil {
			return fmt.Errorf("capture: withdraw bootstrap token of %s: %w", id, err)
		}
		c.log.InfoContext(ctx, "device asked to remove its bootstrap token; withdrawn, versions kept", "device", id, "withdrawn", withdrawn)
		return nil
	}
	d, _ := c.devices.Device(ctx, id)
	if _, err := c.tokens.PutToken(ctx, escrow.Device{ID: id, Serial: d.Serial}, escrow.KindBootstrapToken, tok, escrow.SourceCheckin); err != nil {
		return fmt.Errorf("capture: escrow bootstrap token of %s: %w", id, err)
	}
	c.log.InfoContext(ctx, "bootstrap token escrowed", "device", id)
	return nil
}

// GetBootstrapToken serves the escrowed bootstrap token back to the device
// (nil when none is escrowed, or the Mac withdrew it with an empty
// SetBootstrapToken).
func (c *Capture) GetBootstrapToken(ctx context.Context, id escrow.DeviceID) ([]byte, error) {
	tok, err := c.tokens.Token(ctx, deviceActor(id), id, escrow.KindBootstrapToken)
	if errors.Is(err, escrow.ErrNotFound) {
		return nil, nil
	}
	return tok, err
}

// Result handles a command result in two steps. The first runs before the
// MDM server acknowledges the result: it writes a recovery key blob to the
// outbox, so an acknowledged key is never lost. The returned function is the
// second step, run after the acknowledgement; it is never nil on success.
// A result for a command fvescrow did not send returns ErrUnknownCommand.
// The request type of the answered command is returned too.
func (c *Capture) Result(ctx context.Context, id escrow.DeviceID, status, uuid string, raw []byte) (func(context.Context) error, string, error) {
	nothing := func(context.Context) error { return nil }
	if status == fde.StatusIdle || uuid == "" {
		return nothing, "", nil
	}
	cmd, err := c.store.Command(ctx, id, uuid)
	if errors.Is(err, escrow.ErrNotFound) {
		return nil, "", fmt.Errorf("%w: %s from %s", ErrUnknownCommand, uuid, id)
	}
	if err != nil {
		return nil, "", err
	}
	// Every result passes here: the body is read only for what fvescrow
	// needs of it (the ErrorChain of an answer that is not Acknowledged; the
	// type-specific answers below).
	res := &fde.Result{Status: status, CommandUUID: uuid}
	if status != fde.StatusAcknowledged {
		if res, err = fde.ParseResult(raw); err != nil {
			return nil, cmd.RequestType, fmt.Errorf("capture: result %s: %w", uuid, err)
		}
	}
	after := nothing
	if status != fde.StatusNotNow { // NotNow: the device answers again later
		switch cmd.RequestType {
		case fde.RequestSecurityInfo:
			after, err = c.securityInfo(ctx, id, cmd, raw)
		case fde.RequestRotateFileVaultKey:
			after, err = c.rotateResult(ctx, id, cmd, status, raw)
		case fde.RequestUserList:
			after = func(ctx context.Context) error { return c.userList(ctx, id, raw) }
		case fde.RequestInstallProfile:
			after = func(ctx context.Context) error { return c.installProfile(ctx, id, cmd, res) }
		}
		if err != nil {
			// Refused, so the device sends it again: not answered yet.
			return nil, cmd.RequestType, err
		}
	}
	// Answered only once what must survive the acknowledgement is kept
	// (the escrow checks and rotations read the answer time).
	if _, err := c.store.AnswerCommand(ctx, id, uuid, status, errorChain(res.ErrorChain), c.now()); err != nil {
		return nil, cmd.RequestType, err
	}
	return after, cmd.RequestType, nil
}

func errorChain(ec []fde.ErrorChainItem) string {
	parts := make([]string, 0, len(ec))
	for _, e := range ec {
		d := e.USEnglishDescription
		if d == "" {
			d = e.LocalizedDescription
		}
		parts = append(parts, fmt.Sprintf("%s %d: %s", e.ErrorDomain, e.ErrorCode, d))
	}
	return strings.Join(parts, "; ")
}

func (c *Capture) securityInfo(ctx context.Context, id escrow.DeviceID, cmd escrow.Command, raw []byte) (func(context.Context) error, error) {
	si, err := fde.ParseSecurityInfo(raw)
	if err != nil {
		return nil, fmt.Errorf("capture: SecurityInfo from %s: %w", id, err)
	}
	if si.Status != fde.StatusAcknowledged {
		return func(ctx context.Context) error {
			if _, err := c.devices.UpsertDevice(ctx, escrow.Device{ID: id, Attrs: map[string]string{escrow.AttrSecurityInfoError: errorChain(si.ErrorChain)}}); err != nil {
				return err
			}
			return c.reschedule(ctx, id, false)
		}, nil
	}
	var item *escrow.OutboxItem
	if len(si.FDEPersonalRecoveryKeyCMS) > 0 {
		d, _ := c.devices.Device(ctx, id)
		it, err := c.keys.Receive(ctx, escrow.Device{ID: id, Serial: d.Serial}, si.FDEPersonalRecoveryKeyCMS, escrow.SourceSecurityInfo)
		if err != nil {
			return nil, fmt.Errorf("capture: keep the key blob from %s: %w", id, err)
		}
		item = &it
	}
	return func(ctx context.Context) error {
		attrs := escrow.SecurityInfoAttrs(si, c.now())
		settled := false
		if item != nil {
			d, _ := c.devices.Device(ctx, id)
			r, err := c.keys.EscrowReceived(ctx, escrow.Device{ID: id, Serial: d.Serial}, *item)
			switch {
			case errors.Is(err, escrow.ErrUndecryptable):
				attrs[escrow.AttrEscrowStatus], attrs[escrow.AttrEscrowError] = string(escrow.EscrowUndecryptable), r.Version.Error
				settled = true
			case r.Pending:
				attrs[escrow.AttrEscrowStatus], attrs[escrow.AttrEscrowError] = string(escrow.EscrowReceived), ""
			case err != nil:
				return fmt.Errorf("capture: escrow key of %s: %w", id, err)
			default:
				attrs[escrow.AttrEscrowStatus], attrs[escrow.AttrEscrowError] = string(escrow.EscrowEscrowed), ""
				settled = true
				if r.Version.Current() {
					attrs[escrow.AttrKeyProvenAt] = c.now().UTC().Format(time.RFC3339Nano)
				}
			}
		} else {
			vs, err := c.keys.KeyVersions(ctx, id, escrow.KindPRK)
			if err != nil {
				return err
			}
			st := escrow.StatusFromSecurityInfo(si, hasCurrent(vs))
			attrs[escrow.AttrEscrowStatus] = string(st)
			settled = st == escrow.EscrowEscrowed || st == escrow.EscrowFileVaultOff
		}
		if _, err := c.devices.UpsertDevice(ctx, escrow.Device{ID: id, DeviceKey: si.FDEPersonalRecoveryKeyDeviceKey, Attrs: attrs}); err != nil {
			return err
		}
		c.log.InfoContext(ctx, "SecurityInfo", "device", id, "escrow_status", attrs[escrow.AttrEscrowStatus], "fde_enabled", si.FDEEnabled.String())
		if err := c.reschedule(ctx, id, settled); err != nil {
			return err
		}
		if c.rot != nil && attrs[escrow.AttrEscrowStatus] == string(escrow.EscrowPredatesProfile) {
			// Only a new key fixes this, and MDM has no credential to make
			// one: an agent on the Mac must.
			if err := c.markRegeneration(ctx, id, "FileVault was turned on before the escrow profile: its key was never escrowed", 0); err != nil {
				return err
			}
		}
		return c.rotationAfterSecurityInfo(ctx, id, si)
	}, nil
}

func hasCurrent(vs []escrow.KeyVersion) bool {
	for _, v := range vs {
		if v.Current() {
			return true
		}
	}
	return false
}

func (c *Capture) userList(ctx context.Context, id escrow.DeviceID, raw []byte) error {
	ul, err := fde.ParseUserList(raw)
	if err != nil {
		return fmt.Errorf("capture: UserList from %s: %w", id, err)
	}
	if ul.Status != fde.StatusAcknowledged {
		return nil
	}
	accounts := token.FromUserList(ul)
	changes, err := c.store.ReplaceAccounts(ctx, id, accounts, c.now())
	if err != nil {
		return err
	}
	holders := token.Holders(accounts)
	names := make([]string, len(holders))
	for i, h := range holders {
		names[i] = h.UserName
	}
	if _, err := c.devices.UpsertDevice(ctx, escrow.Device{ID: id, Attrs: map[string]string{
		escrow.AttrTokenHolders: strings.Join(names, ","), escrow.AttrUserListAt: c.now().UTC().Format(time.RFC3339),
	}}); err != nil {
		return err
	}
	if len(changes) > 0 {
		c.log.InfoContext(ctx, "account inventory changed", "device", id, "changes", len(changes))
	}
	return nil
}

func (c *Capture) installProfile(ctx context.Context, id escrow.DeviceID, cmd escrow.Command, res *fde.Result) error {
	attrs := map[string]string{}
	switch res.Status {
	case fde.StatusAcknowledged:
		attrs[escrow.AttrProfileInstalled], attrs[escrow.AttrProfileError] = c.now().UTC().Format(time.RFC3339), ""
		if d, err := c.devices.Device(ctx, id); err == nil && escrow.EscrowStatus(d.Attrs[escrow.AttrEscrowStatus]) == escrow.EscrowProfilePending {
			attrs[escrow.AttrEscrowStatus] = string(escrow.EscrowAwaitingKey)
		}
	default:
		attrs[escrow.AttrProfileError] = errorChain(res.ErrorChain)
		if cmd.Purpose == PurposeEnrollment {
			attrs[escrow.AttrEscrowStatus] = string(escrow.EscrowProfileFailed)
		}
	}
	_, err := c.devices.UpsertDevice(ctx, escrow.Device{ID: id, Attrs: attrs})
	return err
}
