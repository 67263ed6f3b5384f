package mdm

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
)

// The escrow-check job of a device: pending until due, then SecurityInfo and
// UserList are sent and the job waits for the answer. The answer moves it
// back to pending with a backoff while no key has arrived, or a day later
// once the key is escrowed (or FileVault is off). A device that does not
// answer is pushed again rather than sent another command, so an offline
// Mac does not collect a queue of SecurityInfo requests.

// runCheck sends the check commands for job j (or pushes again if the last
// ones are still unanswered) and marks it waiting.
func (c *Capture) runCheck(ctx context.Context, j escrow.Job, force bool) error {
	now := c.now()
	if j.Data == nil {
		j.Data = map[string]string{}
	}
	if last := j.Data["command"]; last != "" && !force {
		cmd, err := c.store.Command(ctx, j.Device, last)
		pushes, _ := strconv.Atoi(j.Data["pushes"])
		// With resendAfter set (companion mode, where an answer can be lost
		// between the MDM server and fvescrow), a check still unanswered
		// after that many pushes is sent again.
		if err == nil && cmd.AnsweredAt.IsZero() && (c.resendAfter == 0 || pushes < c.resendAfter) {
			if err := c.enqueuer.Push(ctx, j.Device); err != nil {
				c.log.WarnContext(ctx, "push failed", "device", j.Device, "err", err)
			}
			j.Attempts++
			j.Data["pushes"] = strconv.Itoa(pushes + 1)
			j.State, j.Step, j.RunAt = escrow.JobWaiting, "pushed-again", now.Add(c.delay(j.Attempts))
			return c.store.UpdateJob(ctx, j)
		}
	}
	si, err := fde.NewSecurityInfo()
	if err != nil {
		return err
	}
	ul, err := fde.NewUserList()
	if err != nil {
		return err
	}
	purpose := PurposeEscrowCheck
	if force {
		purpose = PurposeEnrollment
	}
	if err := c.send(ctx, j.Device, si, purpose, j.ID); err != nil {
		return err
	}
	if err := c.send(ctx, j.Device, ul, purpose, j.ID); err != nil {
		return err
	}
	j.Data["command"] = si.UUID
	delete(j.Data, "pushes")
	j.State, j.Step, j.RunAt = escrow.JobWaiting, "securityinfo-sent", now.Add(c.answer)
	return c.store.UpdateJob(ctx, j)
}

func (c *Capture) delay(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	return c.backoff[min(attempt, len(c.backoff))-1]
}

// reschedule plans the next check after a SecurityInfo answer: a day later
// when settled, else after the next backoff step.
func (c *Capture) reschedule(ctx context.Context, id escrow.DeviceID, settled bool) error {
	j, err := c.store.OpenJob(ctx, JobEscrowCheck, id)
	if errors.Is(err, escrow.ErrNotFound) {
		j = escrow.Job{Kind: JobEscrowCheck, Device: id}
	} else if err != nil {
		return err
	}
	now := c.now()
	if settled && j.ID != 0 && j.State == escrow.JobPending && j.Step == "answered" && j.Attempts == 0 &&
		j.RunAt.After(now.Add(c.daily-c.daily/24)) {
		// Settled within the last hour of a day's recheck already (a Mac
		// answering several SecurityInfo in a row): moving the recheck
		// by minutes is not worth a write.
		return nil
	}
	if settled {
		j.Attempts, j.RunAt = 0, now.Add(c.daily)
	} else {
		j.Attempts++
		j.RunAt = now.Add(c.delay(j.Attempts))
	}
	j.State, j.Step = escrow.JobPending, "answered"
	if j.ID == 0 {
		_, err = c.store.PutJob(ctx, j)
		return err
	}
	return c.store.UpdateJob(ctx, j)
}

// RunDue runs every escrow check that is due and returns how many ran.
func (c *Capture) RunDue(ctx context.Context) (int, error) {
	n := 0
	for {
		now := c.now()
		jobs, err := c.store.ClaimJobs(ctx, JobEscrowCheck, c.owner, now, now.Add(2*time.Minute), 50)
		if err != nil {
			return n, err
		}
		if len(jobs) == 0 {
			return n, nil
		}
		for _, j := range jobs {
			if err := c.runCheck(ctx, j, false); err != nil {
				// Leave the job for the next round rather than stall the rest.
				c.log.WarnContext(ctx, "escrow check failed", "device", j.Device, "err", err)
				j.Attempts++
				j.Error, j.RunAt = err.Error(), now.Add(c.delay(j.Attempts))
				if uerr := c.store.UpdateJob(ctx, j); uerr != nil {
					return n, fmt.Errorf("%w (and %w)", err, uerr)
				}
				continue
			}
			n++
		}
	}
}

// Run runs due checks every interval until ctx ends.
func (c *Capture) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := c.RunDue(ctx); err != nil && ctx.Err() == nil { // a stopping server is not a failure
			c.log.WarnContext(ctx, "escrow checks incomplete", "ran", n, "err", err)
		} else if n > 0 {
			c.log.InfoContext(ctx, "escrow checks sent", "devices", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
