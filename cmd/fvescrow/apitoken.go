package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/escrow"
)

// settingAPITokenHash holds the SHA-256 of the API token generated on first
// start (the token itself is written once to a 0600 file, never stored).
const settingAPITokenHash = "api.bootstrap-token-sha256"

// apiTokenFile accepts the admin automation token: the one in
// --api-token-file, or one generated on first start and written to
// DATA/api-token (mode 0600). It is never printed: a service's output often
// ends up in a journal.
func apiTokenFile(ctx context.Context, file, dataDir string, authn *auth.Authenticator, settings escrow.SettingStore) (string, error) {
	principal := auth.Principal{UserID: "token:api-token-file", Name: "API token file", Roles: []escrow.Role{escrow.RoleAdmin}}
	if file != "" {
		tok, err := readSecretFile(file)
		if err != nil {
			return "", err
		}
		authn.AddStaticToken(string(tok), principal)
		return "", nil
	}
	stored, err := settings.Setting(ctx, settingAPITokenHash)
	if err == nil {
		b, err := os.ReadFile(filepath.Join(dataDir, "api-token"))
		if err != nil {
			return "", nil // moved away, as advised: only --api-token-file brings it back
		}
		if tok := strings.TrimSpace(string(b)); hex.EncodeToString(auth.HashSecret(tok)) == string(stored) {
			authn.AddStaticToken(tok, principal)
		}
		return "", nil
	}
	if !errors.Is(err, escrow.ErrNotFound) {
		return "", err
	}
	tok := auth.NewSecret("fve_")
	path := filepath.Join(dataDir, "api-token")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", err
	}
	if err := writeNew(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write the new API token: %w", err)
	}
	if err := settings.CreateSetting(ctx, settingAPITokenHash, []byte(hex.EncodeToString(auth.HashSecret(tok)))); err != nil {
		return "", err
	}
	authn.AddStaticToken(tok, principal)
	return "created an admin API token in " + path + " (mode 0600): move it to a secrets manager and pass --api-token-file", nil
}
