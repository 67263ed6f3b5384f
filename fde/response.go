package fde

// Tolerant parsers of MDM command results. Devices omit keys routinely (older
// OS versions, unsupervised Macs, commands that were not acknowledged), so a
// missing key yields a zero value or FlagUnknown, unknown keys are ignored, and
// a key of an unexpected type becomes a warning instead of failing the whole
// answer. Only bytes that are not a plist dictionary at all are an error.

// Command statuses a device reports.
const (
	StatusAcknowledged       = "Acknowledged"
	StatusError              = "Error"
	StatusCommandFormatError = "CommandFormatError"
	StatusNotNow             = "NotNow"
	StatusIdle               = "Idle"
)

// ErrorChainItem is one entry of a result's ErrorChain.
type ErrorChainItem struct {
	ErrorCode            int64
	ErrorDomain          string
	LocalizedDescription string
	USEnglishDescription string
}

// Result holds the fields every command result shares.
type Result struct {
	UDID         string
	EnrollmentID string
	CommandUUID  string
	Status       string
	ErrorChain   []ErrorChainItem
	// Warnings lists keys that had an unexpected type (names and types only).
	Warnings []string
}

// ParseResult reads the common fields of a command result.
func ParseResult(b []byte) (*Result, error) {
	d, err := decodeDict(b, MaxResultSize)
	if err != nil {
		return nil, err
	}
	r := parseResult(d)
	return &r, nil
}

func parseResult(d dict) Result {
	r := Result{
		UDID:         d.str("UDID"),
		EnrollmentID: d.str("EnrollmentID"),
		CommandUUID:  d.str("CommandUUID"),
		Status:       d.str("Status"),
	}
	for _, e := range d.dicts("ErrorChain") {
		code, _ := e.integer("ErrorCode")
		r.ErrorChain = append(r.ErrorChain, ErrorChainItem{
			ErrorCode:            code,
			ErrorDomain:          e.str("ErrorDomain"),
			LocalizedDescription: e.str("LocalizedDescription"),
			USEnglishDescription: e.str("USEnglishDescription"),
		})
	}
	return r
}

func (r *Result) finish(d dict) { r.Warnings = *d.warnings }

// ManagementStatus is SecurityInfo.ManagementStatus.
type ManagementStatus struct {
	EnrolledViaDEP             Flag
	UserApprovedEnrollment     Flag
	IsUserEnrollment           Flag
	IsActivationLockManageable Flag
}

// SecurityInfo is the answer to a SecurityInfo command.
type SecurityInfo struct {
	Result
	// Present reports whether the answer carried a SecurityInfo dictionary.
	Present bool

	FDEEnabled                      Flag
	FDEHasPersonalRecoveryKey       Flag
	FDEHasInstitutionalRecoveryKey  Flag
	FDEPersonalRecoveryKeyCMS       []byte // encrypted to an escrow certificate
	FDEPersonalRecoveryKeyDeviceKey string

	BootstrapTokenAllowedForAuthentication           string // "allowed", "disallowed" or "not supported"
	BootstrapTokenRequiredForSoftwareUpdate          Flag
	BootstrapTokenRequiredForKernelExtensionApproval Flag

	ManagementStatus ManagementStatus

	SystemIntegrityProtectionEnabled Flag
	IsRecoveryLockEnabled            Flag

	// iOS only.
	PasscodePresent               Flag
	PasscodeCompliant             Flag
	PasscodeCompliantWithProfiles Flag
}

// ParseSecurityInfo reads a SecurityInfo command result.
func ParseSecurityInfo(b []byte) (*SecurityInfo, error) {
	d, err := decodeDict(b, MaxResultSize)
	if err != nil {
		return nil, err
	}
	si := &SecurityInfo{Result: parseResult(d)}
	if s, ok := d.sub("SecurityInfo"); ok {
		si.Present = true
		si.FDEEnabled = s.flag("FDE_Enabled")
		si.FDEHasPersonalRecoveryKey = s.flag("FDE_HasPersonalRecoveryKey")
		si.FDEHasInstitutionalRecoveryKey = s.flag("FDE_HasInstitutionalRecoveryKey")
		si.FDEPersonalRecoveryKeyCMS = s.data("FDE_PersonalRecoveryKeyCMS")
		si.FDEPersonalRecoveryKeyDeviceKey = s.str("FDE_PersonalRecoveryKeyDeviceKey")
		si.BootstrapTokenAllowedForAuthentication = s.str("BootstrapTokenAllowedForAuthentication")
		si.BootstrapTokenRequiredForSoftwareUpdate = s.flag("BootstrapTokenRequiredForSoftwareUpdate")
		si.BootstrapTokenRequiredForKernelExtensionApproval = s.flag("BootstrapTokenRequiredForKernelExtensionApproval")
		si.SystemIntegrityProtectionEnabled = s.flag("SystemIntegrityProtectionEnabled")
		si.IsRecoveryLockEnabled = s.flag("IsRecoveryLockEnabled")
		si.PasscodePresent = s.flag("PasscodePresent")
		si.PasscodeCompliant = s.flag("PasscodeCompliant")
		si.PasscodeCompliantWithProfiles = s.flag("PasscodeCompliantWithProfiles")
		if ms, ok := s.sub("ManagementStatus"); ok {
			si.ManagementStatus = ManagementStatus{
				EnrolledViaDEP:             ms.flag("EnrolledViaDEP"),
				UserApprovedEnrollment:     ms.flag("UserApprovedEnrollment"),
				IsUserEnrollment:           ms.flag("IsUserEnrollment"),
				IsActivationLockManageable: ms.flag("IsActivationLockManageable"),
			}
		}
	}
	si.finish(d)
	return si, nil
}

// User is one entry of a UserList answer.
type User struct {
	UserName       string
	FullName       string
	UID            int64 // -1 when the device did not report it
	UserGUID       string
	IsLoggedIn     Flag
	MobileAccount  Flag
	HasSecureToken Flag // macOS 11 and later
}

// UserList is the answer to a UserList command.
type UserList struct {
	Result
	Users []User
}

// ParseUserList reads a UserList command result.
func ParseUserList(b []byte) (*UserList, error) {
	d, err := decodeDict(b, MaxResultSize)
	if err != nil {
		return nil, err
	}
	ul := &UserList{Result: parseResult(d)}
	for _, u := range d.dicts("Users") {
		uid, ok := u.integer("UID")
		if !ok {
			uid = -1
		}
		ul.Users = append(ul.Users, User{
			UserName:       u.str("UserName"),
			FullName:       u.str("FullName"),
			UID:            uid,
			UserGUID:       u.str("UserGUID"),
			IsLoggedIn:     u.flag("IsLoggedIn"),
			MobileAccount:  u.flag("MobileAccount"),
			HasSecureToken: u.flag("HasSecureToken"),
		})
	}
	ul.finish(d)
	return ul, nil
}

// InstalledProfile is one entry of a ProfileList answer.
type InstalledProfile struct {
	PayloadIdentifier   string
	PayloadUUID         string
	PayloadDisplayName  string
	PayloadOrganization string
	PayloadVersion      int64
	IsManaged           Flag
	IsEncrypted         Flag
	PayloadTypes        []string // PayloadType of each PayloadContent item
}

// HasPayloadType reports whether the profile carries a payload of type t.
func (p InstalledProfile) HasPayloadType(t string) bool {
	for _, pt := range p.PayloadTypes {
		if pt == t {
			return true
		}
	}
	return false
}

// ProfileList is the answer to a ProfileList command.
type ProfileList struct {
	Result
	Profiles []InstalledProfile
}

// ParseProfileList reads a ProfileList command result.
func ParseProfileList(b []byte) (*ProfileList, error) {
	d, err := decodeDict(b, MaxResultSize)
	if err != nil {
		return nil, err
	}
	pl := &ProfileList{Result: parseResult(d)}
	for _, p := range d.dicts("ProfileList") {
		v, _ := p.integer("PayloadVersion")
		ip := InstalledProfile{
			PayloadIdentifier:   p.str("PayloadIdentifier"),
			PayloadUUID:         p.str("PayloadUUID"),
			PayloadDisplayName:  p.str("PayloadDisplayName"),
			PayloadOrganization: p.str("PayloadOrganization"),
			PayloadVersion:      v,
			IsManaged:           p.flag("IsManaged"),
			IsEncrypted:         p.flag("IsEncrypted"),
		}
		for _, c := range p.dicts("PayloadContent") {
			ip.PayloadTypes = append(ip.PayloadTypes, c.str("PayloadType"))
		}
		pl.Profiles = append(pl.Profiles, ip)
	}
	pl.finish(d)
	return pl, nil
}

// RotateResult is the answer to a RotateFileVaultKey command.
type RotateResult struct {
	Result
	// EncryptedNewRecoveryKey is the new PRK as CMS, encrypted to the
	// ReplyEncryptionCertificate. Optional: devices may omit it, in which case
	// the new key arrives through SecurityInfo.
	EncryptedNewRecoveryKey []byte
}

// ParseRotateResult reads a RotateFileVaultKey command result.
func ParseRotateResult(b []byte) (*RotateResult, error) {
	d, err := decodeDict(b, MaxResultSize)
	if err != nil {
		return nil, err
	}
	rr := &RotateResult{Result: parseResult(d)}
	if s, ok := d.sub("RotateResult"); ok {
		rr.EncryptedNewRecoveryKey = s.data("EncryptedNewRecoveryKey")
	}
	rr.finish(d)
	return rr, nil
}
