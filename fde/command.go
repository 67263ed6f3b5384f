package fde

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/micromdm/plist"
)

// Request types fvescrow sends.
const (
	RequestSecurityInfo       = "SecurityInfo"
	RequestUserList           = "UserList"
	RequestInstallProfile     = "InstallProfile"
	RequestProfileList        = "ProfileList"
	RequestRotateFileVaultKey = "RotateFileVaultKey"
)

// Command is an MDM command ready to enqueue. Plist may hold a secret (a
// RotateFileVaultKey carries the current PRK), so Command prints only its
// request type and UUID.
type Command struct {
	UUID        string
	RequestType string
	Plist       []byte
}

func (c Command) String() string   { return c.RequestType + " " + c.UUID }
func (c Command) GoString() string { return "fde.Command{" + c.String() + "}" }
func (c Command) LogValue() slog.Value {
	return slog.GroupValue(slog.String("request_type", c.RequestType), slog.String("command_uuid", c.UUID))
}

// CommandOption adjusts a command builder.
type CommandOption func(*commandConfig)

type commandConfig struct {
	uuid string
	rand io.Reader
}

// WithCommandUUID sets the CommandUUID instead of a fresh random one.
func WithCommandUUID(u string) CommandOption { return func(c *commandConfig) { c.uuid = u } }

type commandEnvelope struct {
	Command     any    `plist:"Command"`
	CommandUUID string `plist:"CommandUUID"`
}

func buildCommand(requestType string, body any, opts []CommandOption) (Command, error) {
	cfg := commandConfig{rand: rand.Reader}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.uuid == "" {
		u, err := newUUID(cfg.rand)
		if err != nil {
			return Command{}, err
		}
		cfg.uuid = u
	}
	b, err := plist.MarshalIndent(commandEnvelope{Command: body, CommandUUID: cfg.uuid}, "\t")
	if err != nil {
		return Command{}, fmt.Errorf("marshal %s command: %w", requestType, err)
	}
	return Command{UUID: cfg.uuid, RequestType: requestType, Plist: b}, nil
}

type simpleRequest struct {
	RequestType string `plist:"RequestType"`
}

// NewSecurityInfo builds a SecurityInfo command (FileVault state and the
// FDE_PersonalRecoveryKeyCMS blob; needs access right 1024).
func NewSecurityInfo(opts ...CommandOption) (Command, error) {
	return buildCommand(RequestSecurityInfo, simpleRequest{RequestSecurityInfo}, opts)
}

// NewUserList builds a UserList command (local accounts and SecureToken holders).
func NewUserList(opts ...CommandOption) (Command, error) {
	return buildCommand(RequestUserList, simpleRequest{RequestUserList}, opts)
}

// NewProfileList builds a ProfileList command.
func NewProfileList(managedOnly bool, opts ...CommandOption) (Command, error) {
	return buildCommand(RequestProfileList, struct {
		RequestType string `plist:"RequestType"`
		ManagedOnly bool   `plist:"ManagedOnly,omitempty"`
	}{RequestProfileList, managedOnly}, opts)
}

// NewInstallProfile builds an InstallProfile command for a profile (XML or
// signed DER).
func NewInstallProfile(profile []byte, opts ...CommandOption) (Command, error) {
	if len(profile) == 0 {
		return Command{}, errors.New("install profile: empty profile")
	}
	return buildCommand(RequestInstallProfile, struct {
		RequestType string `plist:"RequestType"`
		Payload     []byte `plist:"Payload"`
	}{RequestInstallProfile, profile}, opts)
}

// NewRotateFileVaultKey builds a RotateFileVaultKey command for the personal
// recovery key, unlocking with the current escrowed PRK and asking for the new
// key to be encrypted to reply. The returned Plist holds the current PRK in
// clear: build it only when the command is handed to the device, and never
// store it.
func NewRotateFileVaultKey(current RecoveryKey, reply *x509.Certificate, opts ...CommandOption) (Command, error) {
	if current.IsZero() {
		return Command{}, errors.New("rotate FileVault key: no current recovery key")
	}
	return rotateFileVaultKey(current.Expose(), reply, opts)
}

// RotationReferencePrefix starts the FileVaultUnlock.Password of a
// RotateFileVaultKey command at rest in the MDM queue: a reference to the
// key version, replaced by the key itself when the command is handed to the
// device.
const RotationReferencePrefix = "fvescrow-reference:"

// NewRotateFileVaultKeyReference builds the RotateFileVaultKey command as
// it rests in the MDM queue: the same command, with a reference (not a
// secret) where the current key will go.
func NewRotateFileVaultKeyReference(reference string, reply *x509.Certificate, opts ...CommandOption) (Command, error) {
	if reference == "" || strings.ContainsAny(reference, "<>&") {
		return Command{}, errors.New("rotate FileVault key: bad reference")
	}
	return rotateFileVaultKey(RotationReferencePrefix+reference, reply, opts)
}

func rotateFileVaultKey(password string, reply *x509.Certificate, opts []CommandOption) (Command, error) {
	if reply == nil {
		return Command{}, errors.New("rotate FileVault key: no reply certificate (the new key would not come back)")
	}
	type unlock struct {
		Password string `plist:"Password"`
	}
	return buildCommand(RequestRotateFileVaultKey, struct {
		RequestType                string `plist:"RequestType"`
		KeyType                    string `plist:"KeyType"`
		FileVaultUnlock            unlock `plist:"FileVaultUnlock"`
		ReplyEncryptionCertificate []byte `plist:"ReplyEncryptionCertificate"`
	}{RequestRotateFileVaultKey, "personal", unlock{password}, reply.Raw}, opts)
}

// newUUID returns a random (version 4) UUID in upper case, as Apple writes them.
func newUUID(r io.Reader) (string, error) {
	var u [16]byte
	if _, err := io.ReadFull(r, u[:]); err != nil {
		return "", fmt.Errorf("generate UUID: %w", err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}
