package mdm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	nanodiskv "github.com/micromdm/nanomdm/storage/diskv"
	"github.com/peterbourgon/diskv/v3"
)

// DiskvQueuePurger deletes answered commands from nanomdm's diskv storage
// ("filekv"), which keeps every command body and result forever. It knows
// nanomdm v0.9.0's key layout (storage/kv): the body under
// "<uuid>.raw" and "<uuid>.req_type", the result and status under
// "<id>.<uuid>.queueitem.{report,status}"; a test reads the files to prove
// it.
type DiskvQueuePurger struct{ d *diskv.Diskv }

// NewDiskvQueuePurger purges the diskv storage rooted at path (the path
// given to nanomdm's diskv.New).
func NewDiskvQueuePurger(path string) *DiskvQueuePurger {
	return &DiskvQueuePurger{d: diskv.New(diskv.Options{
		BasePath:  filepath.Join(path, "queue"),
		Transform: nanodiskv.Split2X2Transform,
	})}
}

// PurgeCommand deletes the command's body and the device's result. The
// queue links are nanomdm's and are already gone once a device answers.
func (p *DiskvQueuePurger) PurgeCommand(_ context.Context, id, uuid string) error {
	var errs []error
	item := id + "." + uuid + ".queueitem."
	for _, k := range []string{uuid + ".raw", uuid + ".req_type", item + "report", item + "status"} {
		if err := p.d.Erase(k); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("purge %s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}
