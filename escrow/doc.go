// Package escrow is fvescrow's core: the service every door (MDM capture,
// helpdesk, self-service portal, rotation) goes through to store and reveal
// FileVault recovery keys, bootstrap tokens and unlock tokens, and the
// hash-chained audit log that records it all.
//
// It declares the small interfaces it consumes ([SecretStore], [MetaStore]
// and their parts); backends live in sub-packages (vaultstore, agestore,
// sqlstore) and are chosen by cmd. storetest holds one conformance suite per
// interface that every backend passes.
//
// # Threat model
//
// A recovery key unlocks a Mac's disk, so whoever reads it owns the Mac's
// data. fvescrow assumes the network, devices and operators may be hostile
// and protects keys as follows:
//
//   - Keys arrive encrypted to an escrow certificate (CMS). The CMS is kept as
//     received in an outbox first, so a crash or an unavailable secret store
//     never loses a key; it is safe to keep because it is already encrypted.
//   - Decrypted keys live only in the SecretStore (Vault KV v2 in production,
//     age-encrypted files in the embedded default), never in the metadata
//     database, logs, errors, metrics or URLs. Secret-bearing types print as
//     REDACTED.
//   - A key leaves only through [Service.Reveal], which validates the reason and
//     ticket and writes the audit record before it returns the key. Policy
//     that depends on who asks (roles, approvals, rate limits) wraps Reveal as
//     decorators in the doors.
//   - The audit log is append-only and hash-chained; periodic checkpoints are
//     signed with a key held in the SecretStore, so rewriting history needs
//     both database and secret-store access, and `fvescrow audit verify`
//     names the first record that does not fit.
//   - Nothing is hard-deleted: a new key supersedes the old one, which stays
//     readable; devices are retired, not removed.
//
// # Key lifecycle
//
//	received (outbox) ─▶ escrowed (current) ─▶ disclosed ─▶ superseded by a rotated key ─▶ (kept)
//	          └────────▶ undecryptable (kept with the recipient it names; retried when the keyring grows)
//
// A key version is "current" while it is the newest decrypted version of
// its device. The same key arriving again (the same CMS, or a new CMS of the
// same key) is recognised and makes no new version.
package escrow
