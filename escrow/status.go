package escrow

import (
	"time"

	"github.com/fvescrow/fvescrow/fde"
)

// EscrowStatus is what a device page shows about its recovery key.
type EscrowStatus string

const (
	EscrowEnrolled        EscrowStatus = "enrolled"                   // enrolled; escrow profile not sent yet
	EscrowProfilePending  EscrowStatus = "profile-pending"            // escrow profile sent, not yet acknowledged
	EscrowProfileFailed   EscrowStatus = "profile-failed"             // the Mac refused the escrow profile
	EscrowAwaitingKey     EscrowStatus = "awaiting-key"               // profile installed; no key reported yet
	EscrowReceived        EscrowStatus = "received"                   // a key blob is in the outbox (secret store unavailable)
	EscrowEscrowed        EscrowStatus = "escrowed"                   // a current key is in escrow
	EscrowUndecryptable   EscrowStatus = "undecryptable"              // a blob no escrow identity opens (recipient in escrow_error)
	EscrowPredatesProfile EscrowStatus = "filevault-predates-profile" // FileVault on with a PRK that was never escrowed
	EscrowFileVaultOff    EscrowStatus = "filevault-off"              // FileVault is off
	EscrowNoPRK           EscrowStatus = "no-personal-recovery-key"   // FileVault on without a personal recovery key
)

// Device attribute keys the MDM door maintains (Device.Attrs).
const (
	AttrEscrowStatus      = "escrow_status"
	AttrEscrowError       = "escrow_error"
	AttrEnrollmentState   = "enrollment_state" // "authenticated", "enrolled", "checked-out"
	AttrEnrolledAt        = "enrolled_at"
	AttrProfileInstalled  = "escrow_profile_installed_at"
	AttrProfileError      = "escrow_profile_error"
	AttrFDEEnabled        = "fde_enabled"
	AttrFDEHasPRK         = "fde_has_personal_recovery_key"
	AttrFDEHasIRK         = "fde_has_institutional_recovery_key"
	AttrBootstrapAllowed  = "bootstrap_token_allowed_for_authentication"
	AttrBootstrapSU       = "bootstrap_token_required_for_software_update"
	AttrBootstrapKext     = "bootstrap_token_required_for_kext_approval"
	AttrUserApprovedMDM   = "user_approved_mdm"
	AttrEnrolledViaDEP    = "enrolled_via_dep"
	AttrSecurityInfoAt    = "securityinfo_at"
	AttrSecurityInfoError = "securityinfo_error"
	AttrTokenHolders      = "securetoken_holders"
	AttrUserListAt        = "userlist_at"
	// AttrKeyProvenAt is when the device last reported (SecurityInfo) a
	// blob of its current escrowed key since it enrolled: proof that it is
	// the Mac the key belongs to, which a rotation needs before it hands
	// the key out. Authenticate clears it.
	AttrKeyProvenAt = "key_proven_at"
)

// SecurityInfoAttrs are the device attributes a SecurityInfo answer sets.
func SecurityInfoAttrs(si *fde.SecurityInfo, at time.Time) map[string]string {
	a := map[string]string{AttrSecurityInfoAt: at.UTC().Format(time.RFC3339), AttrSecurityInfoError: ""}
	set := func(k string, f fde.Flag) {
		if f != fde.FlagUnknown {
			a[k] = f.String()
		}
	}
	set(AttrFDEEnabled, si.FDEEnabled)
	set(AttrFDEHasPRK, si.FDEHasPersonalRecoveryKey)
	set(AttrFDEHasIRK, si.FDEHasInstitutionalRecoveryKey)
	set(AttrBootstrapSU, si.BootstrapTokenRequiredForSoftwareUpdate)
	set(AttrBootstrapKext, si.BootstrapTokenRequiredForKernelExtensionApproval)
	set(AttrUserApprovedMDM, si.ManagementStatus.UserApprovedEnrollment)
	set(AttrEnrolledViaDEP, si.ManagementStatus.EnrolledViaDEP)
	if si.BootstrapTokenAllowedForAuthentication != "" {
		a[AttrBootstrapAllowed] = si.BootstrapTokenAllowedForAuthentication
	}
	return a
}

// StatusFromSecurityInfo decides a device's escrow status from an
// acknowledged SecurityInfo answer without a key blob (with a blob, the
// ingest result decides). hasKey reports that fvescrow already holds a
// current key for the device.
func StatusFromSecurityInfo(si *fde.SecurityInfo, hasKey bool) EscrowStatus {
	switch {
	case si.FDEEnabled == fde.FlagFalse:
		return EscrowFileVaultOff
	case hasKey:
		return EscrowEscrowed
	case si.FDEEnabled.True() && si.FDEHasPersonalRecoveryKey.True():
		// On, with a personal key, and no blob: the key was made before the
		// escrow profile was installed and macOS never encrypted it to us.
		return EscrowPredatesProfile
	case si.FDEEnabled.True() && si.FDEHasPersonalRecoveryKey == fde.FlagFalse:
		return EscrowNoPRK
	}
	return EscrowAwaitingKey
}
