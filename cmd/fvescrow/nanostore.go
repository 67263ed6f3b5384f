package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
	"github.com/fvescrow/fvescrow/internal/logadapt"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/micromdm/nanomdm/storage"
	"github.com/micromdm/nanomdm/storage/diskv"
	"github.com/micromdm/nanomdm/storage/pgsql"
)

// nanomdmSchema is the PostgreSQL schema (namespace) nanomdm's tables live
// in, beside fvescrow's own tables in the same database.
const nanomdmSchema = "nanomdm"

// openNanoStorage opens nanomdm's storage: PostgreSQL (its schema applied
// through fvescrow's migrations, command bodies and results deleted once a
// device answers) when metadata is in PostgreSQL, otherwise nanomdm's
// file-based key-value storage in the data folder, with a purger for the
// answered rotation commands it would otherwise keep.
func openNanoStorage(ctx context.Context, sc *storeConfig, s *stores, log *slog.Logger) (storage.AllStorage, mdm.QueuePurger, func() error, error) {
	nl := logadapt.New(log.With("component", "nanomdm-storage"))
	if s.meta.Dialect() != sqlstore.Postgres {
		dir := filepath.Join(sc.dataDir, "nanomdm")
		return diskv.New(dir), mdm.NewDiskvQueuePurger(dir), func() error { return nil }, nil
	}
	err := s.meta.Migrate(ctx, "nanomdm", []sqlstore.Migration{{
		Version: 1,
		Name:    "nanomdm v0.9.0 schema",
		// nanomdm's schema names its tables without a schema: point the
		// transaction at ours for it, then back for the migration record.
		SQL: "CREATE SCHEMA IF NOT EXISTS " + nanomdmSchema + ";\nSET LOCAL search_path TO " + nanomdmSchema + ";\n" + pgsql.Schema +
			"\nSET LOCAL search_path TO DEFAULT;",
	}})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("nanomdm schema: %w", err)
	}
	dsn, err := sc.dsn()
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("nanomdm storage: cannot parse the connection string")
	}
	cfg.RuntimeParams["search_path"] = nanomdmSchema
	db := stdlib.OpenDB(*cfg)
	st, err := pgsql.New(pgsql.WithDB(db), pgsql.WithLogger(nl), pgsql.WithDeleteCommands())
	if err != nil {
		db.Close()
		return nil, nil, nil, fmt.Errorf("nanomdm storage: %w", err)
	}
	// WithDeleteCommands: nanomdm deletes a command's body and result itself
	// once the device answers.
	return st, nil, func() error { return closeDB(db) }, nil
}

func closeDB(db *sql.DB) error { return db.Close() }
