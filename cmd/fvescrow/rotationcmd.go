package main

import (
	"errors"
	"time"

	"github.com/spf13/cobra"
)

// rotationConfig configures key rotation.
type rotationConfig struct {
	delay    time.Duration
	maxAge   time.Duration
	interval time.Duration
	giveUp   time.Duration
}

func (c *rotationConfig) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.DurationVar(&c.delay, "rotation-delay", time.Hour, "after a key is revealed, wait this long (so the user can finish unlocking), then rotate it")
	f.DurationVar(&c.maxAge, "rotation-max-age", 0, "also rotate keys older than this (e.g. 8760h; 0: only after disclosure, by hand or in campaigns)")
	f.DurationVar(&c.interval, "rotation-interval", 30*time.Second, "how often due rotations are run and overdue keys swept")
	f.DurationVar(&c.giveUp, "rotation-give-up", 14*24*time.Hour, "fail a rotation the Mac has not answered for this long (it is then listed for key regeneration)")
}

func (c *rotationConfig) validate() error {
	// A zero delay would mean the default hour to escrow.NewRotations.
	if c.delay <= 0 || c.maxAge < 0 || c.interval <= 0 || c.giveUp <= 0 {
		return errors.New("rotation durations must be positive (--rotation-max-age may be 0)")
	}
	if c.maxAge > 0 && c.maxAge < 24*time.Hour {
		return errors.New("--rotation-max-age under a day would rotate keys constantly")
	}
	return nil
}
