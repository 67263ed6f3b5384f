package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/escrow"
)

// settingAPITokenHash holds the SHA-256 of the API token generated on first
// start (the token itself is shown once and never stored).
const settingAPITokenHash = "api.bootstrap-token-sha256"

// apiTokenAuth returns the middleware guarding the nanomdm API: the token in
// --api-token-file, or one generated on first start and written to
// DATA/api-token (mode 0600). It is never printed: a service's output often
// ends up in a journal.
func apiTokenAuth(ctx context.Context, file, dataDir string, settings escrow.SettingStore, log *slog.Logger) (func(http.Handler) http.Handler, string, error) {
	if file != "" {
		tok, err := readSecretFile(file)
		if err != nil {
			return nil, "", err
		}
		return api.StaticTokenAuth(api.TokenHash(string(tok)), log), "", nil
	}
	stored, err := settings.Setting(ctx, settingAPITokenHash)
	if err == nil {
		var h [32]byte
		if n, err := hex.Decode(h[:], stored); err != nil || n != 32 {
			return nil, "", fmt.Errorf("stored API token hash is corrupt")
		}
		return api.StaticTokenAuth(h, log), "", nil
	}
	if !errors.Is(err, escrow.ErrNotFound) {
		return nil, "", err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, "", err
	}
	tok := "fve_" + base64.RawURLEncoding.EncodeToString(raw)
	h := api.TokenHash(tok)
	path := filepath.Join(dataDir, "api-token")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, "", err
	}
	if err := writeNew(path, []byte(tok+"\n"), 0o600); err != nil {
		return nil, "", fmt.Errorf("write the new API token: %w", err)
	}
	if err := settings.CreateSetting(ctx, settingAPITokenHash, []byte(hex.EncodeToString(h[:]))); err != nil {
		return nil, "", err
	}
	note := "created the API token for /nanomdm/v1 in " + path + " (mode 0600): move it to a secrets manager and pass --api-token-file"
	return api.StaticTokenAuth(h, log), note, nil
}
