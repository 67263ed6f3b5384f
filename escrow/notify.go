package escrow

import (
	"context"
	"time"
)

// NotificationState is where a notification is.
type NotificationState string

const (
	NotificationPending   NotificationState = "pending"
	NotificationDelivered NotificationState = "delivered"
	NotificationFailed    NotificationState = "failed" // gave up after the last retry: visible, never dropped
)

// Notification is a message about something that happened (a reveal, a
// block), to a device owner or the security channel. It never holds a
// secret. Deliveries are retried; failures stay visible.
type Notification struct {
	ID          int64
	Channel     string // "email" or "webhook"
	Target      string // an address, or the webhook's name
	Subject     string
	Body        string // plain text for e-mail, JSON for webhooks
	AuditSeq    int64  // the audit record it is about
	State       NotificationState
	Attempts    int
	LastError   string
	NextAttempt time.Time
	CreatedAt   time.Time
	DeliveredAt time.Time
}

// NotificationQuery selects notifications.
type NotificationQuery struct {
	States []NotificationState
	Limit  int
}

// NotificationStore queues notifications for delivery.
type NotificationStore interface {
	EnqueueNotification(ctx context.Context, n Notification) (Notification, error)
	// ClaimNotifications leases due pending notifications.
	ClaimNotifications(ctx context.Context, owner string, now, leaseUntil time.Time, limit int) ([]Notification, error)
	// FinishNotification records an attempt: delivered, or failed with the
	// next attempt (a zero next marks it failed for good).
	FinishNotification(ctx context.Context, id int64, delivered bool, errText string, next, at time.Time) error
	Notifications(ctx context.Context, q NotificationQuery) ([]Notification, error)
}

// Notifier queues notifications (the reveal path's consumer-side view).
type Notifier interface {
	EnqueueNotification(ctx context.Context, n Notification) (Notification, error)
}
