// Package fde is the FileVault domain of fvescrow: escrow identities and the
// keyring that decrypts FDE_PersonalRecoveryKeyCMS blobs, the personal
// recovery key (PRK) format, configuration profile builders, and MDM command
// builders and response parsers.
//
// The package is pure: it does no I/O beyond what callers hand it, never logs,
// and never puts secret bytes into an error. Secret-bearing values
// ([RecoveryKey], [PrivateKey]) print as "REDACTED" through fmt, slog and
// encoding/json; code that really needs the secret calls Expose, which keeps
// every use greppable.
//
// Parsers of device-supplied bytes bound their input ([MaxCMSSize],
// [MaxResultSize]), return an error rather than panic on any input, and are
// fuzzed.
package fde
