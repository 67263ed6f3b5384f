# fvescrow server policy: the least privilege escrow/vaultstore needs.
#
# Paths assume vaultstore's defaults: KV v2 mounted at "secret" and the prefix
# "fvescrow" (vaultstore.Config Mount and Prefix). If an operator changes
# either, they edit every path below to match:
#   <mount>/data/<prefix>/*  and  <mount>/metadata/<prefix>/*
#
# Every capability here is needed: the vaultstore tests run the SecretStore
# conformance suite under a token holding exactly this policy (and no
# "default" policy), and check that removing any one capability breaks
# fvescrow (TestPolicyIsMinimal) and that everything else is refused
# (TestPolicyDenies).
# Nothing grants delete, destroy, undelete, list or patch: fvescrow never
# removes a key version, and a stolen fvescrow token cannot either.

# Secret versions. update: every version, the first included (its metadata
# is written first, so Vault sees an update); read: reveal and verify;
# create: a check-and-set write for a secret that does not exist, which must
# fail as a CAS conflict rather than as permission denied.
path "secret/data/fvescrow/*" {
  capabilities = ["create", "read", "update"]
}

# Per-secret metadata, written, never read: max_versions before the first
# version (KV v2 would otherwise keep only 10 versions and delete older ones)
# and the non-secret custom_metadata (kind, device, serial) after it.
# create: metadata of a new secret; update: of an existing one.
path "secret/metadata/fvescrow/*" {
  capabilities = ["create", "update"]
}

# Token upkeep. lookup-self: the readiness probe (Ping) and token-file login
# (learns the token's TTL). renew-self: keeps the token alive up to its max
# TTL (a periodic token in a token file lives only by renewal).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
