package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/audit"
)

// auditInTx writes the change named in ctx (audit.Begin, or a transport's
// fallback) as done, inside the write transaction that makes it, so that
// the change and its record commit or vanish together. It returns the
// entry to mark done once the transaction commits (nil: nothing written).
func auditInTx(ctx context.Context, tx *sql.Tx) (*audit.Entry, error) {
	e := audit.FromContext(ctx)
	r, ok := e.Pending(audit.OK, time.Now())
	if !ok {
		return nil, nil
	}
	return e, insertAudit(ctx, tx, r)
}

// auditRefused writes the change named in ctx as refused by err, in a
// transaction of its own (the change's was rolled back). A failure to write
// it is logged, never returned: the caller reports err.
func (d *DB) auditRefused(ctx context.Context, err error) {
	e := audit.FromContext(ctx)
	r, ok := e.Pending(audit.Result(err, aiproxy.ErrorCode(err)), time.Now())
	if !ok {
		return
	}
	if aiproxy.ErrorCode(err) == aiproxy.EUNAVAILABLE {
		// The database could not take the change (busy, unreachable, full):
		// it would not take its record either, and trying would wait as
		// long again, once here and once more when the service records
		// the refusal. The attempt changed nothing; the log keeps it.
		d.log.Warn("audit record not written: the database is unavailable", "action", r.Action, "result", r.Result)
		e.Done()
		return
	}
	// The change's context may be the one that was cancelled.
	ctx = context.WithoutCancel(ctx)
	tx, berr := d.sql.BeginTx(ctx, nil)
	if berr == nil {
		defer tx.Rollback()
		if berr = insertAudit(ctx, tx, r); berr == nil {
			berr = tx.Commit()
		}
	}
	if berr != nil {
		d.log.Error("audit record not written", "action", r.Action, "result", r.Result, "err", berr)
		return
	}
	e.Done()
}

// RecordAudit writes the change named in ctx with the result of err (nil:
// ok) in a transaction of its own, unless a write transaction already
// recorded it. The service calls it when a change ends without reaching a
// write: refused by validation, or with nothing to change.
func (d *DB) RecordAudit(ctx context.Context, err error) {
	if err != nil {
		d.auditRefused(ctx, err)
		return
	}
	e := audit.FromContext(ctx)
	if _, ok := e.Pending(audit.OK, time.Now()); !ok {
		return
	}
	var done *audit.Entry
	werr := d.writeTx(audit.Without(ctx), func(tx *sql.Tx) error {
		var err error
		done, err = auditInTx(ctx, tx)
		return err
	})
	if werr != nil {
		d.log.Error("audit record not written", "err", werr)
		return
	}
	done.Done()
}

func insertAudit(ctx context.Context, tx *sql.Tx, r audit.Record) error {
	_, err := tx.ExecContext(ctx,
		"INSERT INTO audit_log (ts, source, actor, action, target, result) VALUES (?, ?, ?, ?, ?, ?)",
		ms(r.Time), r.Source, r.Actor, r.Action, r.Target, r.Result)
	return err
}

// AuditLog returns the audit records at or after since (all when zero),
// oldest first.
func (d *DB) AuditLog(ctx context.Context, since time.Time) ([]audit.Record, error) {
	q := "SELECT ts, source, actor, action, target, result FROM audit_log"
	var args []any
	if !since.IsZero() {
		q += " WHERE ts >= ?"
		args = append(args, ms(since))
	}
	rows, err := d.sql.QueryContext(ctx, q+" ORDER BY ts, id", args...)
	if err != nil {
		return nil, dbError(err)
	}
	defer rows.Close()
	out := []audit.Record{}
	for rows.Next() {
		var r audit.Record
		var ts int64
		if err := rows.Scan(&ts, &r.Source, &r.Actor, &r.Action, &r.Target, &r.Result); err != nil {
			return nil, dbError(err)
		}
		r.Time = fromMS(ts)
		out = append(out, r)
	}
	return out, dbError(rows.Err())
}
