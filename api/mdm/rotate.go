package mdm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/micromdm/plist"
)

// Rotation through MDM. A rotation job (escrow.JobRotation) is carried out
// here:
//
//   - scheduled/retrying: RotateFileVaultKey goes into the MDM queue holding
//     a reference to the current key version, never the key (queued);
//   - when nanomdm hands it to the device, the reference is replaced by the
//     current key (sent; see captureService) and, once the device answers,
//     the queued body and the stored result are purged;
//   - Acknowledged: RotateResult.EncryptedNewRecoveryKey goes to the outbox
//     before the answer is acknowledged, is escrowed as a new version (the
//     old one superseded, kept) and SecurityInfo is asked to confirm it;
//     without a key in the answer, the key is taken from SecurityInfo;
//   - SecurityInfo whose key is a new, current version → verified;
//   - Error: the old key stays current, the ErrorChain is kept, and the
//     command is retried with backoff, then the device is marked as needing
//     key regeneration by an agent (failed).
//
// Every step is saved in the job before the next one starts, so a process
// killed at any point leaves a job the runner (on any replica) picks up.

// Purposes of rotation commands.
const (
	PurposeRotation       = "rotation"
	PurposeRotationVerify = "rotation-verify"
)

// RotationKeys builds rotation commands (escrow.Service).
type RotationKeys interface {
	RotationReference(ctx context.Context, id escrow.DeviceID, opts ...fde.CommandOption) (fde.Command, escrow.KeyVersion, error)
	RotationCommand(ctx context.Context, id escrow.DeviceID, uuid string) (fde.Command, error)
}

// RotationStore is the persistence rotation uses.
type RotationStore interface {
	ScheduleJob(ctx context.Context, j escrow.Job) (escrow.Job, bool, error)
	MarkRegeneration(ctx context.Context, r escrow.Regeneration, e escrow.Event) (bool, error)
	ClearRegeneration(ctx context.Context, id escrow.DeviceID, at time.Time, e escrow.Event) (bool, error)
	Regenerations(ctx context.Context, q escrow.RegenerationQuery) ([]escrow.Regeneration, error)
	AppendAudit(ctx context.Context, e escrow.Event) (escrow.AuditRecord, error)
}

// RotationConfig configures rotation.
type RotationConfig struct {
	Store RotationStore
	// Keys builds the commands. Nil when MDM rotation is unavailable
	// (companion mode: the queue belongs to another server, which would
	// keep the key at rest); every rotation then falls back to key
	// regeneration, with Unavailable as the reason.
	Keys        RotationKeys
	Unavailable string
	// Retries are the delays before re-sending after an Error answer; after
	// the last, the rotation fails. Default 15m, 1h, 4h.
	Retries []time.Duration
	// VerifyRetries are the delays before asking SecurityInfo again while
	// the new key is not confirmed. Default 5m, 15m, 1h, 4h, 12h.
	VerifyRetries []time.Duration
	// GiveUp fails a rotation the device has not answered for this long.
	// Default 14 days.
	GiveUp time.Duration
}

// WithRotation enables rotation.
func WithRotation(cfg RotationConfig) Option {
	return func(c *Capture) {
		if cfg.Retries == nil {
			cfg.Retries = []time.Duration{15 * time.Minute, time.Hour, 4 * time.Hour}
		}
		if cfg.VerifyRetries == nil {
			cfg.VerifyRetries = []time.Duration{5 * time.Minute, 15 * time.Minute, time.Hour, 4 * time.Hour, 12 * time.Hour}
		}
		if cfg.GiveUp <= 0 {
			cfg.GiveUp = 14 * 24 * time.Hour
		}
		if cfg.Unavailable == "" {
			cfg.Unavailable = "MDM rotation is not available"
		}
		c.rot = &cfg
	}
}

// Rotation job data keys used here.
const (
	dataSince       = "since"      // when the current command was queued (RFC 3339)
	dataPushes      = "pushes"     // pushes without an answer
	dataLastError   = "last_error" // the last ErrorChain (kept after a retry succeeds)
	dataUnlockSeq   = "unlock_version"
	dataReplacedNow = "replaced_before_rotation"
	dataProofAsks   = "proof_asks" // SecurityInfo sent to get the key proven (AttrKeyProvenAt)
)

// quietEnqueuer queues without pushing and pushes many devices at once,
// for batches of rotations (a campaign).
type quietEnqueuer interface {
	EnqueueQuiet(ctx context.Context, id escrow.DeviceID, cmd fde.Command) error
	PushMany(ctx context.Context, ids []escrow.DeviceID) error
}

// RunRotations runs every rotation job that is due and returns how many
// it advanced.
func (c *Capture) RunRotations(ctx context.Context) (int, error) {
	if c.rot == nil {
		return 0, nil
	}
	n := 0
	for {
		now := c.now()
		jobs, err := c.store.ClaimJobs(ctx, escrow.JobRotation, c.owner, now, now.Add(5*time.Minute), 100)
		if err != nil {
			return n, err
		}
		if len(jobs) == 0 {
			return n, nil
		}
		var wake []escrow.DeviceID
		for _, j := range jobs {
			pushed, err := c.runRotation(ctx, j)
			if err != nil {
				// Leave the job for a later round rather than stall the rest.
				c.log.WarnContext(ctx, "rotation step failed; will retry", "device", j.Device, "job", j.ID, "err", err)
				j.Error, j.RunAt = safeError(err), c.now().Add(time.Minute)
				if uerr := c.store.UpdateJob(ctx, j); uerr != nil {
					return n, fmt.Errorf("%w (and %w)", err, uerr)
				}
				continue
			}
			if pushed {
				wake = append(wake, j.Device)
			}
			n++
		}
		c.wake(ctx, wake)
	}
}

// RunRotationLoop runs due rotations every interval until ctx ends.
func (c *Capture) RunRotationLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := c.RunRotations(ctx); err != nil && ctx.Err() == nil { // a stopping server is not a failure
			c.log.WarnContext(ctx, "rotations incomplete", "advanced", n, "err", err)
		} else if n > 0 {
			c.log.InfoContext(ctx, "rotations advanced", "jobs", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// safeError is an error text fit for a job record: store errors name
// operations and devices, never secrets.
func safeError(err error) string {
	s := err.Error()
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// runRotation advances one claimed job. It reports whether a command was
// queued that needs a push.
func (c *Capture) runRotation(ctx context.Context, j escrow.Job) (bool, error) {
	if j.Data == nil {
		j.Data = map[string]string{}
	}
	d, err := c.devices.Device(ctx, j.Device)
	switch {
	case errors.Is(err, escrow.ErrNotFound):
		return false, c.endRotation(ctx, j, escrow.JobCanceled, "the device is unknown")
	case err != nil:
		return false, err
	case d.Retired():
		return false, c.endRotation(ctx, j, escrow.JobCanceled, "the device was retired")
	}
	switch j.Step {
	case escrow.RotationScheduled, escrow.RotationRetrying, "":
		return c.startRotation(ctx, j, d)
	case escrow.RotationQueued, escrow.RotationSent:
		return c.awaitRotation(ctx, j)
	case escrow.RotationAcknowledged, escrow.RotationEscrowed:
		return c.verifyRotation(ctx, j)
	}
	return false, c.endRotation(ctx, j, escrow.JobFailed, "unknown step "+strconv.Quote(j.Step))
}

// proofAsks is how many SecurityInfo a rotation sends, a quarter of an hour
// apart, to get the key proven before it gives up.
const proofAsks = 3

// awaitProof holds a rotation whose device has not reported its current key
// since it enrolled. RotateFileVaultKey carries the key in clear, and a
// new device identity under a known enrollment ID (a re-enrollment, or a
// fake device enrolled with a leaked profile) has proven nothing: only the
// Mac itself can report a blob of the key fvescrow holds. It asks for
// SecurityInfo and looks again later; after proofAsks it fails, visibly.
func (c *Capture) awaitProof(ctx context.Context, j escrow.Job) (bool, error) {
	asks, _ := strconv.Atoi(j.Data[dataProofAsks])
	if asks >= proofAsks {
		return false, c.endRotation(ctx, j, escrow.JobFailed,
			"the device has not reported the escrowed key since it enrolled, so it may not be the Mac the key belongs to; the key was not sent")
	}
	next := j
	next.Data = maps.Clone(j.Data)
	next.Data[dataProofAsks] = strconv.Itoa(asks + 1)
	next.State, next.RunAt = escrow.JobPending, c.now().Add(15*time.Minute)
	next.Error = "waiting for the device to report its escrowed key (SecurityInfo) since it enrolled"
	if err := c.store.UpdateJob(ctx, next); err != nil {
		return false, err
	}
	cmd, err := fde.NewSecurityInfo()
	if err != nil {
		return false, err
	}
	if err := c.sendQuiet(ctx, j.Device, cmd, PurposeEscrowCheck, 0); err != nil {
		return false, err
	}
	return true, nil
}

// startRotation queues RotateFileVaultKey (the reference form).
func (c *Capture) startRotation(ctx context.Context, j escrow.Job, d escrow.Device) (bool, error) {
	if d.Attrs[escrow.AttrEnrollmentState] == "checked-out" {
		return false, c.endRotation(ctx, j, escrow.JobFailed, "the device is not enrolled in MDM")
	}
	if c.rot.Keys == nil {
		return false, c.endRotation(ctx, j, escrow.JobFailed, c.rot.Unavailable)
	}
	cmd, cur, err := c.rot.Keys.RotationReference(ctx, j.Device)
	if errors.Is(err, escrow.ErrNotFound) {
		return false, c.endRotation(ctx, j, escrow.JobFailed, "no escrowed key to unlock the rotation with")
	} else if err != nil {
		return false, err
	}
	if d.Attrs[escrow.AttrKeyProvenAt] == "" {
		return c.awaitProof(ctx, j)
	}
	if j.Ref != 0 && cur.ID != j.Ref && cur.DisclosedAt.IsZero() && j.Data[escrow.RotationDataTrigger] != escrow.TriggerManual &&
		j.Data[escrow.RotationDataTrigger] != escrow.TriggerCampaign {
		// The key this job was for is no longer current, and its successor
		// was never disclosed: nothing is left to rotate.
		j.Data[dataReplacedNow], j.Data[escrow.RotationDataNewVersion] = "true", strconv.Itoa(cur.Seq)
		return false, c.finishVerified(ctx, j, cur)
	}
	// The job names its command before the device can see it: a device
	// answering at once (on another replica) must find the job waiting
	// for that answer. If queueing fails, the runner puts the job back.
	next := j
	next.Data = maps.Clone(j.Data)
	next.Ref = cur.ID
	now := c.now()
	next.Data[escrow.RotationDataCommand], next.Data[dataSince], next.Data[dataPushes] = cmd.UUID, now.UTC().Format(time.RFC3339), "0"
	next.Data[dataUnlockSeq] = strconv.Itoa(cur.Seq)
	next.State, next.Step, next.RunAt, next.Error = escrow.JobWaiting, escrow.RotationQueued, now.Add(c.answer), ""
	if err := c.store.UpdateJob(ctx, next); err != nil {
		return false, err
	}
	if err := c.sendQuiet(ctx, j.Device, cmd, PurposeRotation, j.ID); err != nil {
		return false, err
	}
	c.log.InfoContext(ctx, "RotateFileVaultKey queued", "device", j.Device, "job", j.ID, "command_uuid", cmd.UUID)
	return true, nil
}

// awaitRotation runs when a queued or sent rotation got no answer in time:
// it pushes again, or gives up after GiveUp. An answer that was recorded
// but not acted on (a crash between the two) is acted on now.
func (c *Capture) awaitRotation(ctx context.Context, j escrow.Job) (bool, error) {
	cmd, err := c.store.Command(ctx, j.Device, j.Data[escrow.RotationDataCommand])
	if err != nil && !errors.Is(err, escrow.ErrNotFound) {
		return false, err
	}
	switch cmd.Status {
	case fde.StatusAcknowledged:
		j.State, j.Step, j.RunAt = escrow.JobPending, escrow.RotationAcknowledged, c.now()
		return c.verifyRotation(ctx, j)
	case fde.StatusError, fde.StatusCommandFormatError:
		return false, c.rotationErrored(ctx, j, cmd.Error)
	}
	return c.pushAgain(ctx, j)
}

// pushAgain wakes a device that has not answered, or fails the job once it
// has waited GiveUp.
func (c *Capture) pushAgain(ctx context.Context, j escrow.Job) (bool, error) {
	now := c.now()
	since, _ := time.Parse(time.RFC3339, j.Data[dataSince])
	if !since.IsZero() && now.Sub(since) > c.rot.GiveUp {
		return false, c.endRotation(ctx, j, escrow.JobFailed, fmt.Sprintf("the device did not answer for %s", c.rot.GiveUp))
	}
	pushes, _ := strconv.Atoi(j.Data[dataPushes])
	j.Data[dataPushes] = strconv.Itoa(pushes + 1)
	j.RunAt = now.Add(c.delay(pushes + 1))
	if err := c.store.UpdateJob(ctx, j); err != nil {
		return false, err
	}
	return true, nil
}

// verifyRotation asks SecurityInfo to confirm the new key (or to report
// it, when the answer carried none). A SecurityInfo still unanswered is
// pushed again instead of sent twice.
func (c *Capture) verifyRotation(ctx context.Context, j escrow.Job) (bool, error) {
	if j.State == escrow.JobWaiting && j.Data[escrow.RotationDataCommand] != "" {
		if cmd, err := c.store.Command(ctx, j.Device, j.Data[escrow.RotationDataCommand]); err == nil &&
			cmd.RequestType == fde.RequestSecurityInfo && (cmd.AnsweredAt.IsZero() || cmd.Status == fde.StatusNotNow) {
			return c.pushAgain(ctx, j)
		}
	}
	step := escrow.RotationAcknowledged
	if cur, err := c.currentKey(ctx, j.Device); err == nil && cur.ID != j.Ref {
		step = escrow.RotationEscrowed
	}
	si, err := fde.NewSecurityInfo()
	if err != nil {
		return false, err
	}
	// Saved before the device can answer (see startRotation).
	prev := j
	j.Data = maps.Clone(j.Data)
	now := c.now()
	j.Data[escrow.RotationDataCommand], j.Data[dataSince], j.Data[dataPushes] = si.UUID, now.UTC().Format(time.RFC3339), "0"
	j.State, j.Step, j.RunAt = escrow.JobWaiting, step, now.Add(c.answer)
	if err := c.store.UpdateJob(ctx, j); err != nil {
		return false, err
	}
	if err := c.sendQuiet(ctx, j.Device, si, PurposeRotationVerify, j.ID); err != nil {
		prev.RunAt, prev.Error = now.Add(time.Minute), safeError(err)
		if uerr := c.store.UpdateJob(ctx, prev); uerr != nil {
			return false, fmt.Errorf("%w (and %w)", err, uerr)
		}
		return false, err
	}
	return true, nil
}

func (c *Capture) currentKey(ctx context.Context, id escrow.DeviceID) (escrow.KeyVersion, error) {
	vs, err := c.keys.KeyVersions(ctx, id, escrow.KindPRK)
	if err != nil {
		return escrow.KeyVersion{}, err
	}
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].Current() {
			return vs[i], nil
		}
	}
	return escrow.KeyVersion{}, escrow.ErrNotFound
}

// rotationJob returns the open rotation job a command belongs to.
func (c *Capture) rotationJob(ctx context.Context, cmd escrow.Command) (escrow.Job, bool) {
	j, err := c.store.OpenJob(ctx, escrow.JobRotation, cmd.Device)
	if err != nil || j.ID != cmd.JobID || j.Data[escrow.RotationDataCommand] != cmd.UUID {
		return escrow.Job{}, false // an older command of this device's rotations
	}
	if j.Data == nil {
		j.Data = map[string]string{}
	}
	return j, true
}

// rotateResult is Capture.Result for RotateFileVaultKey. The first step
// (before the answer is acknowledged) puts a returned key in the outbox and
// saves the job's new step; the second escrows the key and asks for
// SecurityInfo. A key is escrowed even if it answers a command whose job
// has ended: the device has that key now.
func (c *Capture) rotateResult(ctx context.Context, id escrow.DeviceID, cmd escrow.Command, status string, raw []byte) (func(context.Context) error, error) {
	rr, err := fde.ParseRotateResult(raw)
	if err != nil {
		return nil, fmt.Errorf("capture: RotateFileVaultKey result from %s: %w", id, err)
	}
	var item *escrow.OutboxItem
	if status == fde.StatusAcknowledged && len(rr.EncryptedNewRecoveryKey) > 0 {
		d, _ := c.devices.Device(ctx, id)
		it, err := c.keys.Receive(ctx, escrow.Device{ID: id, Serial: d.Serial}, rr.EncryptedNewRecoveryKey, escrow.SourceRotation)
		if err != nil {
			return nil, fmt.Errorf("capture: keep the rotated key blob from %s: %w", id, err)
		}
		item = &it
	}
	j, ours := c.rotationJob(ctx, cmd)
	if ours {
		switch status {
		case fde.StatusAcknowledged:
			// If the second step never runs, the runner verifies from here.
			j.State, j.Step, j.RunAt, j.Error = escrow.JobPending, escrow.RotationAcknowledged, c.now().Add(2*time.Minute), ""
			if err := c.store.UpdateJob(ctx, j); err != nil {
				return nil, err
			}
		default:
			if err := c.rotationErrored(ctx, j, errorChain(rr.ErrorChain)); err != nil {
				return nil, err
			}
		}
	}
	return func(ctx context.Context) error {
		if item != nil {
			d, _ := c.devices.Device(ctx, id)
			r, err := c.keys.EscrowReceived(ctx, escrow.Device{ID: id, Serial: d.Serial}, *item)
			switch {
			case errors.Is(err, escrow.ErrUndecryptable):
				// Kept as an undecryptable version; SecurityInfo may still
				// bring the key in a blob that decrypts.
				c.log.WarnContext(ctx, "the rotated key does not decrypt; asking SecurityInfo", "device", id)
			case err != nil && !r.Pending:
				return err
			}
		}
		if !ours || status != fde.StatusAcknowledged {
			return nil
		}
		if _, err := c.verifyRotation(ctx, j); err != nil {
			return err
		}
		return c.enqueuer.Push(ctx, id)
	}, nil
}

// rotationErrored records an Error answer: retry after a backoff, or fail.
func (c *Capture) rotationErrored(ctx context.Context, j escrow.Job, chain string) error {
	if chain == "" {
		chain = "the device answered Error without an ErrorChain"
	}
	j.Attempts++
	j.Data[dataLastError] = chain
	if j.Attempts > len(c.rot.Retries) {
		return c.endRotation(ctx, j, escrow.JobFailed, fmt.Sprintf("the device refused to rotate %d times: %s", j.Attempts, chain))
	}
	j.State, j.Step, j.Error = escrow.JobPending, escrow.RotationRetrying, chain
	j.RunAt = c.now().Add(c.rot.Retries[j.Attempts-1])
	c.log.WarnContext(ctx, "RotateFileVaultKey refused; will retry", "device", j.Device, "attempt", j.Attempts, "error_chain", chain)
	return c.store.UpdateJob(ctx, j)
}

// rotationAfterSecurityInfo advances a rotation waiting for confirmation,
// and clears a regeneration mark once a new key is escrowed and verified.
// It runs after every SecurityInfo answer has been escrowed.
func (c *Capture) rotationAfterSecurityInfo(ctx context.Context, id escrow.DeviceID, si *fde.SecurityInfo) error {
	if c.rot == nil {
		return nil
	}
	cur, err := c.currentKey(ctx, id)
	if err != nil && !errors.Is(err, escrow.ErrNotFound) {
		return err
	}
	haveNew := err == nil && !cur.VerifiedAt.IsZero()
	if haveNew && cur.DisclosedAt.IsZero() {
		if err := c.clearRegeneration(ctx, id, cur); err != nil {
			return err
		}
	}
	j, err := c.store.OpenJob(ctx, escrow.JobRotation, id)
	if errors.Is(err, escrow.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if j.Step != escrow.RotationAcknowledged && j.Step != escrow.RotationEscrowed {
		return nil
	}
	if j.Data == nil {
		j.Data = map[string]string{}
	}
	if haveNew && cur.ID != j.Ref && !cur.DisclosedAt.IsZero() {
		// Current again is a key that was disclosed: the Mac reports its
		// old key, so the rotation did not take. The sweep rotates it anew.
		return c.endRotation(ctx, j, escrow.JobFailed, "the Mac reports a key that was already disclosed (version "+strconv.Itoa(cur.Seq)+"): the rotation did not take")
	}
	if haveNew && cur.ID != j.Ref && si.FDEHasPersonalRecoveryKey != fde.FlagFalse {
		j.Data[escrow.RotationDataNewVersion] = strconv.Itoa(cur.Seq)
		return c.finishVerified(ctx, j, cur)
	}
	if si.FDEEnabled == fde.FlagFalse {
		return c.endRotation(ctx, j, escrow.JobFailed, "FileVault was turned off")
	}
	tries, _ := strconv.Atoi(j.Data[escrow.RotationDataVerifyTries])
	tries++
	j.Data[escrow.RotationDataVerifyTries] = strconv.Itoa(tries)
	if tries > len(c.rot.VerifyRetries) {
		why := "SecurityInfo never reported the new key"
		if j.Step == escrow.RotationEscrowed {
			why = "SecurityInfo never confirmed the new key"
		}
		return c.endRotation(ctx, j, escrow.JobFailed, why)
	}
	j.State, j.RunAt = escrow.JobPending, c.now().Add(c.rot.VerifyRetries[tries-1])
	return c.store.UpdateJob(ctx, j)
}

func (c *Capture) finishVerified(ctx context.Context, j escrow.Job, cur escrow.KeyVersion) error {
	j.State, j.Step, j.Error, j.RunAt = escrow.JobDone, escrow.RotationVerified, "", c.now()
	if err := c.store.UpdateJob(ctx, j); err != nil {
		return err
	}
	if _, err := c.rot.Store.AppendAudit(ctx, escrow.Event{Time: c.now(), Actor: escrow.System, Action: escrow.ActionRotationVerified, Device: j.Device,
		Detail: map[string]string{"job": strconv.FormatInt(j.ID, 10), "new_version": strconv.Itoa(cur.Seq)}}); err != nil {
		return err
	}
	c.log.InfoContext(ctx, "rotation verified", "device", j.Device, "job", j.ID, "version", cur.Seq)
	return c.clearRegeneration(ctx, j.Device, cur)
}

// endRotation ends a job as failed or canceled. A failed rotation leaves
// the device marked for key regeneration.
func (c *Capture) endRotation(ctx context.Context, j escrow.Job, state escrow.JobState, why string) error {
	j.State, j.Error, j.RunAt = state, why, c.now()
	action := escrow.ActionRotationCanceled
	if state == escrow.JobFailed {
		j.Step, action = escrow.RotationFailed, escrow.ActionRotationFailed
	} else {
		j.Step = escrow.RotationCanceled
	}
	if err := c.store.UpdateJob(ctx, j); err != nil {
		return err
	}
	if _, err := c.rot.Store.AppendAudit(ctx, escrow.Event{Time: c.now(), Actor: escrow.System, Action: action, Device: j.Device,
		Reason: why, Detail: map[string]string{"job": strconv.FormatInt(j.ID, 10)}}); err != nil {
		return err
	}
	c.log.WarnContext(ctx, "rotation ended", "device", j.Device, "job", j.ID, "state", state, "reason", why)
	if state == escrow.JobFailed {
		return c.markRegeneration(ctx, j.Device, "rotation failed: "+why, j.Ref)
	}
	return nil
}

func (c *Capture) markRegeneration(ctx context.Context, id escrow.DeviceID, why string, version int64) error {
	_, err := c.rot.Store.MarkRegeneration(ctx, escrow.Regeneration{Device: id, Reason: why, VersionID: version, Since: c.now()},
		escrow.Event{Time: c.now(), Actor: escrow.System, Action: escrow.ActionRegenerationNeeded, Device: id, Reason: why})
	return err
}

// clearRegeneration clears a device's regeneration mark once a key other
// than the one it was about is escrowed and verified.
func (c *Capture) clearRegeneration(ctx context.Context, id escrow.DeviceID, cur escrow.KeyVersion) error {
	rs, err := c.rot.Store.Regenerations(ctx, escrow.RegenerationQuery{Device: id})
	if err != nil || len(rs) == 0 || rs[0].VersionID == cur.ID {
		return err
	}
	_, err = c.rot.Store.ClearRegeneration(ctx, id, c.now(), escrow.Event{Time: c.now(), Actor: escrow.System, Action: escrow.ActionRegenerationResolved,
		Device: id, Detail: map[string]string{"version": strconv.Itoa(cur.Seq)}})
	return err
}

// rotationReenrolled ends an interrupted rotation when a device enrolls
// again (its MDM queue was cleared) and, if the key was not rotated yet,
// starts a new one after the enrollment commands.
func (c *Capture) rotationReenrolled(ctx context.Context, id escrow.DeviceID) error {
	if c.rot == nil {
		return nil
	}
	j, err := c.store.OpenJob(ctx, escrow.JobRotation, id)
	if errors.Is(err, escrow.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	restart := j.Step != escrow.RotationAcknowledged && j.Step != escrow.RotationEscrowed
	if err := c.endRotation(ctx, j, escrow.JobCanceled, "the device enrolled again, which cleared its MDM queue"); err != nil {
		return err
	}
	if !restart {
		return nil // the key already changed: enrollment's SecurityInfo escrows it
	}
	_, _, err = c.rot.Store.ScheduleJob(ctx, escrow.Job{Kind: escrow.JobRotation, Device: id, State: escrow.JobPending, Step: escrow.RotationScheduled,
		RunAt: c.now().Add(15 * time.Minute), Ref: j.Ref, Campaign: j.Campaign,
		Data: map[string]string{escrow.RotationDataTrigger: escrow.TriggerReenrolled, escrow.RotationDataRequestedBy: escrow.System.String()}})
	return err
}

// rotationCheckedOut fails an open rotation of a device that left
// management.
func (c *Capture) rotationCheckedOut(ctx context.Context, id escrow.DeviceID) error {
	if c.rot == nil {
		return nil
	}
	j, err := c.store.OpenJob(ctx, escrow.JobRotation, id)
	if errors.Is(err, escrow.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	return c.endRotation(ctx, j, escrow.JobFailed, "the device left MDM management")
}

// deliver replaces the reference in a RotateFileVaultKey that nanomdm is
// handing to the device with the current key, and records that the job's
// command was sent. Errors of an unavailable store are returned (the device
// retries its check-in); any other failure hands out the reference as it
// is, which the device refuses, and the refusal fails or retries the job.
func (c *Capture) deliver(ctx context.Context, id escrow.DeviceID, uuid string) ([]byte, error) {
	if c.rot == nil || c.rot.Keys == nil {
		return nil, nil
	}
	// The key goes only to a device that proved it holds it, for the
	// command of a rotation still open: a cancelled rotation's command may
	// still sit in the MDM queue.
	rc, err := c.store.Command(ctx, id, uuid)
	if err != nil && !errors.Is(err, escrow.ErrNotFound) {
		return nil, err
	}
	j, open := c.rotationJob(ctx, rc) // a command fvescrow has no record of is no open rotation's
	if d, err := c.devices.Device(ctx, id); err != nil {
		return nil, err
	} else if !open || d.Attrs[escrow.AttrKeyProvenAt] == "" {
		c.log.WarnContext(ctx, "RotateFileVaultKey handed out without the key: its rotation is not open or the device has not proven it holds the key",
			"device", id, "command_uuid", uuid, "rotation_open", open)
		return nil, nil
	}
	cmd, err := c.rot.Keys.RotationCommand(ctx, id, uuid)
	if errors.Is(err, escrow.ErrUnavailable) {
		return nil, err
	} else if err != nil {
		c.log.ErrorContext(ctx, "cannot put the key into RotateFileVaultKey; the device gets the reference", "device", id, "command_uuid", uuid, "err", err)
		return nil, nil
	}
	if j.Step == escrow.RotationQueued {
		j.Step = escrow.RotationSent
		if err := c.store.UpdateJob(ctx, j); err != nil {
			c.log.WarnContext(ctx, "recording a sent rotation", "device", id, "err", err)
		}
	}
	return cmd.Plist, nil
}

// sanitizedResult is what nanomdm may store of a rotation result: the
// status alone. The answer can carry the new key (encrypted) and nothing of
// it needs to outlive the request.
func sanitizedResult(udid, uuid, status string) []byte {
	b, err := plist.Marshal(map[string]string{"UDID": udid, "CommandUUID": uuid, "Status": status})
	if err != nil {
		panic(err) // a map of strings always marshals
	}
	return b
}

// sendQuiet records and queues a command without pushing when the enqueuer
// can, so a batch is woken with one push call.
func (c *Capture) sendQuiet(ctx context.Context, id escrow.DeviceID, cmd fde.Command, purpose string, jobID int64) error {
	q, ok := c.enqueuer.(quietEnqueuer)
	if !ok {
		return c.send(ctx, id, cmd, purpose, jobID)
	}
	if err := c.store.RecordCommand(ctx, escrow.Command{UUID: cmd.UUID, Device: id, RequestType: cmd.RequestType, Purpose: purpose, JobID: jobID, EnqueuedAt: c.now()}); err != nil {
		return fmt.Errorf("capture: record %v: %w", cmd, err)
	}
	if err := q.EnqueueQuiet(ctx, id, cmd); err != nil {
		return fmt.Errorf("capture: enqueue %v for %s: %w", cmd, id, err)
	}
	return nil
}

// wake pushes the devices a batch queued commands for.
func (c *Capture) wake(ctx context.Context, ids []escrow.DeviceID) {
	if len(ids) == 0 {
		return
	}
	q, ok := c.enqueuer.(quietEnqueuer)
	if !ok {
		for _, id := range ids {
			if err := c.enqueuer.Push(ctx, id); err != nil {
				c.log.WarnContext(ctx, "push after queueing a rotation", "device", id, "err", err)
			}
		}
		return
	}
	if err := q.PushMany(ctx, ids); err != nil {
		c.log.WarnContext(ctx, "push after queueing rotations", "devices", len(ids), "err", err)
	}
}
