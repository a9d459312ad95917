// Package db embeds aiproxy's SQL migrations. They are applied in lexical
// order by pkg/store; a merged file is never edited, only followed by a new one.
package db

import "embed"

// Migrations holds migrations/*.sql.
//
//go:embed migrations/*.sql
var Migrations embed.FS
