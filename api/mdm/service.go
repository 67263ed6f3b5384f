package mdm

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/micromdm/nanomdm/mdm"
	"github.com/micromdm/nanomdm/service"
)

// captureService wraps nanomdm's core service with Capture. It sits inside
// certauth, so every request reaching it is from an authenticated device.
// Secrets are escrowed before nanomdm acknowledges the message that carried
// them; everything else happens after nanomdm handled the message.
type captureService struct {
	next    service.CheckinAndCommandService
	capture *Capture
	purge   QueuePurger // nil when the storage deletes answered commands itself
	log     *slog.Logger
}

var _ service.CheckinAndCommandService = (*captureService)(nil)

// deviceChannel returns the device ID of a device-channel message. User
// channels (and Shared iPad users) are left to nanomdm alone.
func deviceChannel(e mdm.Enrollment) (escrow.DeviceID, bool) {
	if e.UserID != "" || e.EnrollmentUserID != "" || e.UserShortName != "" {
		return "", false
	}
	id := e.UDID
	if id == "" {
		id = e.EnrollmentID
	}
	if escrow.DeviceID(id).Validate() != nil {
		return "", false
	}
	return escrow.DeviceID(id), true
}

// background detaches follow-up work from the request's cancellation, with a
// deadline of its own.
func background(r *mdm.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
}

func (s *captureService) Authenticate(r *mdm.Request, m *mdm.Authenticate) error {
	if err := s.next.Authenticate(r, m); err != nil {
		return err
	}
	if id, ok := deviceChannel(m.Enrollment); ok {
		return s.capture.Authenticate(r.Context(), id, m.Raw)
	}
	return nil
}

func (s *captureService) TokenUpdate(r *mdm.Request, m *mdm.TokenUpdate) error {
	id, ok := deviceChannel(m.Enrollment)
	if ok {
		// Escrow the unlock token first; nanomdm's storage never sees it.
		if err := s.capture.EscrowUnlockToken(r.Context(), id, m.UnlockToken); err != nil {
			return err
		}
	}
	if err := s.next.TokenUpdate(r, m); err != nil {
		return err
	}
	if ok {
		// After nanomdm stored the push details, so the enrollment
		// commands can be pushed.
		return s.capture.TokenUpdate(r.Context(), id)
	}
	return nil
}

func (s *captureService) CheckOut(r *mdm.Request, m *mdm.CheckOut) error {
	if err := s.next.CheckOut(r, m); err != nil {
		return err
	}
	if id, ok := deviceChannel(m.Enrollment); ok {
		return s.capture.CheckOut(r.Context(), id)
	}
	return nil
}

func (s *captureService) SetBootstrapToken(r *mdm.Request, m *mdm.SetBootstrapToken) error {
	if id, ok := deviceChannel(m.Enrollment); ok {
		if err := s.capture.SetBootstrapToken(r.Context(), id, m.BootstrapToken.BootstrapToken); err != nil {
			return err
		}
	}
	return s.next.SetBootstrapToken(r, m)
}

func (s *captureService) GetBootstrapToken(r *mdm.Request, m *mdm.GetBootstrapToken) (*mdm.BootstrapToken, error) {
	id, ok := deviceChannel(m.Enrollment)
	if !ok {
		return s.next.GetBootstrapToken(r, m)
	}
	tok, err := s.capture.GetBootstrapToken(r.Context(), id)
	if err != nil || tok == nil {
		return nil, err
	}
	return &mdm.BootstrapToken{BootstrapToken: tok}, nil
}

func (s *captureService) UserAuthenticate(r *mdm.Request, m *mdm.UserAuthenticate) ([]byte, error) {
	return s.next.UserAuthenticate(r, m)
}

func (s *captureService) DeclarativeManagement(r *mdm.Request, m *mdm.DeclarativeManagement) ([]byte, error) {
	return s.next.DeclarativeManagement(r, m)
}

func (s *captureService) GetToken(r *mdm.Request, m *mdm.GetToken) (*mdm.GetTokenResponse, error) {
	return s.next.GetToken(r, m)
}

// CommandAndReportResults runs Capture's first step (the key blob to the
// outbox) before nanomdm stores the result and hands out the next command,
// and the second step after. A result for a command fvescrow never sent is
// not stored: nanomdm sees an Idle and answers with the next command.
func (s *captureService) CommandAndReportResults(r *mdm.Request, res *mdm.CommandResults) (*mdm.Command, error) {
	id, ok := deviceChannel(res.Enrollment)
	if !ok {
		return s.next.CommandAndReportResults(r, res)
	}
	after, requestType, err := s.capture.Result(r.Context(), id, res.Status, res.CommandUUID, res.Raw)
	if errors.Is(err, ErrUnknownCommand) {
		s.log.WarnContext(r.Context(), "ignored a result for a command fvescrow did not send", "device", id, "command_uuid", res.CommandUUID, "status", res.Status)
		idle := *res
		idle.Status, idle.CommandUUID, idle.ErrorChain = "Idle", "", nil
		return s.next.CommandAndReportResults(r, &idle)
	}
	if err != nil {
		return nil, err
	}
	answered := requestType == fde.RequestRotateFileVaultKey && res.Status != fde.StatusNotNow
	if answered {
		// nanomdm keeps only the status of a rotation's answer.
		clean := *res
		clean.Raw = sanitizedResult(res.UDID, res.CommandUUID, res.Status)
		res = &clean
	}
	cmd, err := s.next.CommandAndReportResults(r, res)
	if err != nil {
		return nil, err
	}
	ctx, cancel := background(r)
	defer cancel()
	if answered && s.purge != nil {
		if err := s.purge.PurgeCommand(ctx, string(id), res.CommandUUID); err != nil {
			s.log.ErrorContext(ctx, "purging an answered rotation from the MDM queue", "device", id, "command_uuid", res.CommandUUID, "err", err)
		}
	}
	if err := after(ctx); err != nil {
		// The result is acknowledged and any key blob is in the outbox; the
		// drainer and the next check finish what failed here.
		s.log.ErrorContext(ctx, "processing a command result", "device", id, "command_uuid", res.CommandUUID, "err", err)
	}
	if cmd != nil && cmd.Command.RequestType == fde.RequestRotateFileVaultKey {
		// The queued command holds a reference; the device gets the key.
		raw, err := s.capture.deliver(r.Context(), id, cmd.CommandUUID)
		if err != nil {
			return nil, err
		}
		if raw != nil {
			withKey := *cmd
			withKey.Raw = raw
			cmd = &withKey
		}
	}
	return cmd, nil
}

// QueuePurger deletes an answered command's body and result from the MDM
// server's storage, for backends that do not delete them themselves.
type QueuePurger interface {
	PurgeCommand(ctx context.Context, id, uuid string) error
}
