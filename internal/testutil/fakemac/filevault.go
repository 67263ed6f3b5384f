package fakemac

// DisableFileVault turns FileVault off, as fdesetup disable does: the
// personal recovery key is gone, SecurityInfo reports FDE_Enabled false
// and no key blob, and RotateFileVaultKey is refused.
func (m *Mac) DisableFileVault() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fileVault, m.prk, m.cms = false, "", nil
}

// RevertPRK makes key the Mac's recovery key again and writes a new blob
// of it for SecurityInfo: a Mac whose rotation did not take and that reports
// its old key after all.
func (m *Mac) RevertPRK(key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.setPRKLocked(key)
}
