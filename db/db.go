// Package db embeds aiproxy's SQL migrations. They are applied in lexical
// order by pkg/store; a merged file is never edited, only followed by a new one.
package db

import "embed"

// Migrations holds migrations/*.sql, SQLite's.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// PostgresMigrations holds migrations/postgres/*.sql: the same numbering
// and meaning as Migrations, in PostgreSQL's dialect, plus some of
// PostgreSQL's own that have no SQLite twin (0011_notify.sql). Each store
// applies its own folder only, so a number may exist in one of them alone.
//
//go:embed migrations/postgres/*.sql
var PostgresMigrations embed.FS
