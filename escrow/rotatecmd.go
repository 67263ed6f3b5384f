package escrow

import (
	"context"
	"fmt"

	"github.com/fvescrow/fvescrow/fde"
)

// RotationReference builds the RotateFileVaultKey command that rests in the
// MDM queue: it names the device's current key version instead of holding
// the key, and asks for the new key encrypted to the current escrow
// certificate.
func (s *Service) RotationReference(ctx context.Context, id DeviceID, opts ...fde.CommandOption) (fde.Command, KeyVersion, error) {
	cur, err := s.currentPRK(ctx, id)
	if err != nil {
		return fde.Command{}, KeyVersion{}, err
	}
	reply := s.keyring.Current(s.now())
	cmd, err := fde.NewRotateFileVaultKeyReference(fmt.Sprintf("prk/%s/%d", id, cur.Seq), reply, opts...)
	return cmd, cur, err
}

// RotationCommand builds the command handed to the device for the queued
// command uuid: the same command with the current key in
// FileVaultUnlock.Password. The key leaving for the device is audited
// before the command is returned; if the audit write fails, nothing is.
// The caller must not keep or log the command body.
func (s *Service) RotationCommand(ctx context.Context, id DeviceID, uuid string) (fde.Command, error) {
	cur, err := s.currentPRK(ctx, id)
	if err != nil {
		return fde.Command{}, err
	}
	secret, _, err := s.secrets.Get(ctx, SecretRef{Kind: KindPRK, Owner: string(id)}, cur.SecretVersion)
	if err != nil {
		return fde.Command{}, fmt.Errorf("rotation command: %w", err)
	}
	key, err := fde.ParseRecoveryKey(secret)
	clear(secret)
	if err != nil {
		return fde.Command{}, fmt.Errorf("rotation command: stored key: %w", ErrInvalidKey)
	}
	cmd, err := fde.NewRotateFileVaultKey(key, s.keyring.Current(s.now()), fde.WithCommandUUID(uuid))
	if err != nil {
		return fde.Command{}, err
	}
	if _, err := s.meta.AppendAudit(ctx, s.event(ActorSystem, System.ID, ActionRotationSent, id, map[string]string{
		"version": fmt.Sprint(cur.Seq), "command_uuid": uuid,
	})); err != nil {
		return fde.Command{}, fmt.Errorf("rotation command: audit: %w", err)
	}
	return cmd, nil
}

func (s *Service) currentPRK(ctx context.Context, id DeviceID) (KeyVersion, error) {
	vs, err := s.meta.KeyVersions(ctx, id, KindPRK)
	if err != nil {
		return KeyVersion{}, err
	}
	cur, ok := current(vs)
	if !ok {
		return KeyVersion{}, fmt.Errorf("%w: no escrowed recovery key for %s", ErrNotFound, id)
	}
	return cur, nil
}
