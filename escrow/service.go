package escrow

import (
	"crypto/ed25519"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/fvescrow/fvescrow/fde"
)

// Service is the escrow core. Construct it with New; it is safe for
// concurrent use.
type Service struct {
	secrets SecretStore
	meta    MetaStore
	keyring *fde.Keyring
	log     *slog.Logger
	now     func() time.Time
	reveal  RevealPolicy
	owner   string // claims outbox items as this replica

	outboxLease   time.Duration
	outboxBackoff time.Duration

	auditMu  sync.Mutex
	auditKey ed25519.PrivateKey // loaded by EnsureAuditKey
}

// Option configures a Service.
type Option func(*Service)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *Service) { s.log = l.With("component", "escrow") }
}

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithRevealPolicy sets the reason and ticket rules.
func WithRevealPolicy(p RevealPolicy) Option { return func(s *Service) { s.reveal = p } }

// WithReplicaID names this process when it claims outbox work (default
// hostname and pid).
func WithReplicaID(id string) Option { return func(s *Service) { s.owner = id } }

// WithOutboxTiming sets the claim lease and the first retry delay (doubled
// per attempt, capped at an hour).
func WithOutboxTiming(lease, backoff time.Duration) Option {
	return func(s *Service) { s.outboxLease, s.outboxBackoff = lease, backoff }
}

// New returns a Service over its stores and keyring.
func New(secrets SecretStore, meta MetaStore, keyring *fde.Keyring, opts ...Option) *Service {
	if secrets == nil || meta == nil || keyring == nil {
		panic("escrow.New: nil dependency")
	}
	host, _ := os.Hostname()
	s := &Service{
		secrets:       secrets,
		meta:          meta,
		keyring:       keyring,
		log:           slog.New(slog.DiscardHandler),
		now:           time.Now,
		reveal:        DefaultRevealPolicy(),
		owner:         host + ":" + strconv.Itoa(os.Getpid()),
		outboxLease:   2 * time.Minute,
		outboxBackoff: 5 * time.Second,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Logger is the service's logger, for decorators wired around it.
func (s *Service) Logger() *slog.Logger { return s.log }

// Keyring returns the escrow keyring (every identity ever deployed).
func (s *Service) Keyring() *fde.Keyring { return s.keyring }

// RevealPolicy validates the reason and ticket every reveal needs.
type RevealPolicy struct {
	MinReasonLength int
	MaxReasonLength int
	TicketPattern   *regexp.Regexp
}

// DefaultTicketPattern accepts common ticket IDs: PROJ-123, INC0012345, 12345.
const DefaultTicketPattern = `^([A-Za-z][A-Za-z0-9_]*-[0-9]+|[A-Za-z]{2,6}[0-9]{3,}|[0-9]{3,})$`

// DefaultRevealPolicy: a reason of 10..500 characters and a ticket matching
// DefaultTicketPattern.
func DefaultRevealPolicy() RevealPolicy {
	return RevealPolicy{MinReasonLength: 10, MaxReasonLength: 500, TicketPattern: regexp.MustCompile(DefaultTicketPattern)}
}
