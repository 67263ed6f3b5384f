package fakemac

import (
	"crypto/x509"
	"fmt"
)

// rotate answers RotateFileVaultKey as macOS does for a personal key: the
// FileVaultUnlock password must be the current key (wrong → Error, nothing
// changes); then a new key is made, escrowed again through the profile's
// certificate (what SecurityInfo reports next), and, when withResult, also
// returned encrypted to ReplyEncryptionCertificate.
func (m *Mac) rotate(cmd map[string]any, withResult bool) map[string]any {
	return m.rotateTo(cmd, withResult, nil)
}

func (m *Mac) rotateTo(cmd map[string]any, withResult bool, replyOverride *x509.Certificate) map[string]any {
	unlock, _ := cmd["FileVaultUnlock"].(map[string]any)
	password, _ := unlock["Password"].(string)
	certDER, _ := cmd["ReplyEncryptionCertificate"].([]byte)
	keyType, _ := cmd["KeyType"].(string)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unlocks = append(m.unlocks, password)
	switch {
	case keyType != "personal":
		return ErrorAnswer(12080, "MDMErrorDomain", "Unsupported KeyType.")
	case !m.fileVault || m.prk == "":
		return ErrorAnswer(12081, "MDMErrorDomain", "FileVault is not enabled.")
	case password != m.prk:
		return ErrorAnswer(12082, "MDMErrorDomain", "The FileVault unlock credential is incorrect.")
	}
	reply := replyOverride
	if reply == nil && len(certDER) > 0 {
		c, err := x509.ParseCertificate(certDER)
		if err != nil {
			return ErrorAnswer(12083, "MDMErrorDomain", "The reply encryption certificate is invalid.")
		}
		reply = c
	}
	if err := m.newPRKLocked(); err != nil {
		return ErrorAnswer(12084, "MDMErrorDomain", fmt.Sprintf("Could not rotate: %v", err))
	}
	answer := map[string]any{"Status": "Acknowledged"}
	if withResult && reply != nil {
		cms, err := EncryptCMS(reply, m.prk)
		if err != nil {
			return ErrorAnswer(12084, "MDMErrorDomain", fmt.Sprintf("Could not encrypt: %v", err))
		}
		answer["RotateResult"] = map[string]any{"EncryptedNewRecoveryKey": cms}
	}
	return answer
}

// RotateWithoutResult answers RotateFileVaultKey by rotating but leaving
// RotateResult out (the new key then comes only through SecurityInfo).
func RotateWithoutResult(m *Mac, cmd map[string]any) (string, map[string]any) {
	return unwrap(m.rotateTo(cmd, false, nil))
}

// RotateReplyingTo answers RotateFileVaultKey with the new key encrypted to
// cert instead of the reply certificate (a reply the server cannot open).
func RotateReplyingTo(cert *x509.Certificate) Behavior {
	return func(m *Mac, cmd map[string]any) (string, map[string]any) {
		return unwrap(m.rotateTo(cmd, true, cert))
	}
}

// Answer is a Behavior that answers with a fixed status and keys, changing
// nothing on the Mac (NotNow, or an Error with ErrorAnswer's keys).
func Answer(answer map[string]any) Behavior {
	return func(*Mac, map[string]any) (string, map[string]any) { return unwrap(answer) }
}

func unwrap(answer map[string]any) (string, map[string]any) {
	status, _ := answer["Status"].(string)
	extra := map[string]any{}
	for k, v := range answer {
		if k != "Status" {
			extra[k] = v
		}
	}
	return status, extra
}

// RotationUnlocks lists the FileVaultUnlock passwords the Mac received in
// RotateFileVaultKey commands, in order (test secrets).
func (m *Mac) RotationUnlocks() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.unlocks...)
}

// CMS is the blob SecurityInfo reports (the escrowed current key).
func (m *Mac) CMS() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.cms...)
}
