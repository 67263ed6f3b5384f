package vaultstore

import (
	"context"
	"fmt"
	"time"

	vault "github.com/hashicorp/vault/api"
)

const (
	loginTimeout   = time.Minute
	reloginMinWait = time.Second
	reloginMaxWait = 30 * time.Second
)

// login logs in with the configured method; Auth().Login sets the client's
// token. Callers hold loginMu. Errors and logs never hold the token or the
// credential.
func (s *Store) login(ctx context.Context) (*vault.Secret, error) {
	sec, err := s.client.Auth().Login(ctx, s.auth)
	if err != nil {
		return nil, fmt.Errorf("vaultstore: log in with %s: %w", s.auth, translate(err))
	}
	s.log.Info("logged in to Vault", "method", fmt.Sprint(s.auth),
		"ttl", (time.Duration(sec.Auth.LeaseDuration) * time.Second).String(), "renewable", sec.Auth.Renewable,
		"policies", sec.Auth.Policies)
	return sec, nil
}

// do runs one Vault request. If Vault no longer knows the token (it expired
// early, was revoked, or Vault was restored from an older snapshot), it logs
// in again and retries once: the refused request changed nothing, so the
// retry is safe, check-and-set writes included.
func (s *Store) do(ctx context.Context, f func() error) error {
	token := s.client.Token()
	err := f()
	if err == nil || s.auth == nil || !invalidToken(err) {
		return err
	}
	if lerr := s.reauth(ctx, token); lerr != nil {
		s.log.Error("Vault refused the token and a new login failed", "err", lerr)
		return err
	}
	return f()
}

// reauth logs in again unless another request already replaced stale, and
// hands the new token to the token keeper.
func (s *Store) reauth(ctx context.Context, stale string) error {
	s.loginMu.Lock()
	defer s.loginMu.Unlock()
	if s.client.Token() != stale {
		return nil
	}
	s.log.Warn("Vault refused the token as invalid; logging in again")
	sec, err := s.login(ctx)
	if err != nil {
		return err
	}
	select { // only senders hold loginMu, so after the drain the send fits
	case <-s.fresh:
	default:
	}
	s.fresh <- sec
	return nil
}

// keepToken keeps the client's token valid until ctx ends: it renews the
// token while Vault allows (vault.LifetimeWatcher) and logs in again when
// the token reaches its maximum TTL or renewal fails.
func (s *Store) keepToken(ctx context.Context, secret *vault.Secret) {
	defer close(s.done)
	for secret != nil {
		next := s.watch(ctx, secret)
		if ctx.Err() != nil {
			return
		}
		if next == nil {
			next = s.relogin(ctx)
		}
		secret = next
	}
}

// watch returns nil when the token described by secret needs replacing, the
// secret of a login made meanwhile by a request, or nil when ctx ends.
func (s *Store) watch(ctx context.Context, secret *vault.Secret) *vault.Secret {
	var doneCh <-chan error
	var renewCh <-chan *vault.RenewOutput
	// A token without a TTL (a root token, say) never expires. A token with a
	// TTL is watched even when it is not renewable, so that it is replaced
	// shortly before it expires.
	if secret.Auth != nil && secret.Auth.LeaseDuration > 0 {
		w, err := s.client.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: secret})
		if err != nil {
			s.log.Error("cannot watch the Vault token; logging in again", "err", err)
			return nil
		}
		// Stop ends the watcher between renewals; a renewal in flight
		// finishes within the client timeout.
		defer w.Stop()
		go w.Start()
		doneCh, renewCh = w.DoneCh(), w.RenewCh()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case sec := <-s.fresh:
			return sec
		case err := <-doneCh:
			if err != nil {
				s.log.Warn("Vault token renewal failed; logging in again", "err", translate(err))
			} else {
				s.log.Info("Vault token at the end of its life; logging in again")
			}
			return nil
		case r := <-renewCh:
			if r.Secret != nil && r.Secret.Auth != nil {
				s.log.Debug("Vault token renewed", "ttl", (time.Duration(r.Secret.Auth.LeaseDuration) * time.Second).String())
			}
		}
	}
}

// relogin logs in until it succeeds (backing off up to reloginMaxWait) or
// ctx ends (nil).
func (s *Store) relogin(ctx context.Context) *vault.Secret {
	wait := reloginMinWait
	for {
		lctx, cancel := context.WithTimeout(ctx, loginTimeout)
		s.loginMu.Lock()
		sec, err := s.login(lctx)
		if err == nil {
			select { // this login supersedes one a request may have made
			case <-s.fresh:
			default:
			}
		}
		s.loginMu.Unlock()
		cancel()
		if err == nil {
			return sec
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Error("Vault login failed; retrying", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, reloginMaxWait)
	}
}
