package web

import (
	"html/template"
	"strconv"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

var funcs = template.FuncMap{
	"when":     when,
	"whenp":    func(t *time.Time) string { return whenPtr(t) },
	"yesno":    yesNo,
	"join":     strings.Join,
	"escrowed": escrowStatus,
	"hours":    hoursLabel,
	"lifetimes": func() []int {
		return tokenLifetimes
	},
	"has": func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	},
	"add":      func(a, b int) int { return a + b },
	"rotation": rotationState,
	// The form's ticket examples fit only the default pattern.
	"defaultTicketPattern": func() string { return escrow.DefaultTicketPattern },
}

var rotationText = map[string]string{
	escrow.RotationScheduled:    "Scheduled",
	escrow.RotationQueued:       "Queued in MDM (waiting for the Mac)",
	escrow.RotationSent:         "Sent to the Mac",
	escrow.RotationAcknowledged: "The Mac rotated; escrowing the new key",
	escrow.RotationEscrowed:     "New key escrowed; waiting for SecurityInfo to confirm",
	escrow.RotationVerified:     "Verified",
	escrow.RotationRetrying:     "The Mac refused; will retry",
	escrow.RotationFailed:       "Failed; needs key regeneration",
	escrow.RotationCanceled:     "Canceled",
}

// rotationState spells out a rotation state.
func rotationState(s string) string {
	if t, ok := rotationText[s]; ok {
		return t
	}
	return s
}

// Times are shown in UTC, the zone of the audit log and its exports.
func when(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func whenPtr(t *time.Time) string {
	if t == nil {
		return "—"
	}
	return when(*t)
}

// yesNo spells out a device flag ("true", "false" or unknown) in words, so
// no state is told by colour alone.
func yesNo(s string) string {
	switch s {
	case "true":
		return "Yes"
	case "false":
		return "No"
	}
	return "Unknown"
}

var escrowStatusText = map[escrow.EscrowStatus]string{
	escrow.EscrowEnrolled:        "Enrolled; escrow profile not sent yet",
	escrow.EscrowProfilePending:  "Escrow profile sent, not yet installed",
	escrow.EscrowProfileFailed:   "The Mac refused the escrow profile",
	escrow.EscrowAwaitingKey:     "Waiting for the Mac to report its recovery key",
	escrow.EscrowReceived:        "Key received, waiting for the secret store",
	escrow.EscrowEscrowed:        "Recovery key escrowed",
	escrow.EscrowUndecryptable:   "Key received but no escrow identity can decrypt it",
	escrow.EscrowPredatesProfile: "FileVault was turned on before the escrow profile; the key must be rotated",
	escrow.EscrowFileVaultOff:    "FileVault is off",
	escrow.EscrowNoPRK:           "FileVault is on without a personal recovery key",
}

func escrowStatus(s string) string {
	if t, ok := escrowStatusText[escrow.EscrowStatus(s)]; ok {
		return t
	}
	if s == "" {
		return "Unknown"
	}
	return s
}

func hoursLabel(h int) string {
	switch {
	case h == 0:
		return "never expires"
	case h == 24:
		return "1 day"
	case h%24 == 0:
		return strconv.Itoa(h/24) + " days"
	}
	return strconv.Itoa(h) + " hours"
}
