package fakemac

// DisableFileVault turns FileVault off, as fdesetup disable does: the
// personal recovery key is gone, SecurityInfo reports FDE_Enabled false
// and no key blob, and RotateFileVaultKey is refused.
func (m *Mac) DisableFileVault() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fileVault, m.prk, m.cms = false, "", nil
}
