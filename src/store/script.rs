//! Statements planned first and sent together. sqlx's SQLite driver runs each connection
//! on a thread of its own, and every command it is sent is a round trip between threads
//! (a futex wake-up and a context switch each way), which costs far more than SQLite's
//! own work on a small statement. A group commit therefore reads what it needs, plans
//! its writes in memory and, on SQLite, sends them as one command: the worker runs every
//! statement of one query string in turn (numbered `$N` parameters count across all of
//! them). On PostgreSQL the same statements run one after the other in the transaction.

use sqlx::AnyConnection;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Either, Executor as _};

use futures_util::TryStreamExt as _;

use super::Result;
use super::rows::Cell;

/// `AnyConnection::backend_name` of SQLite.
pub(crate) const SQLITE: &str = "SQLite";

/// One statement with its parameters `$1`…`$n`, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stmt {
    sql: String,
    args: Vec<Cell>,
}

impl Stmt {
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// The next parameter (`$1` first).
    pub fn bind(mut self, value: impl Into<Cell>) -> Self {
        self.args.push(value.into());
        self
    }

    fn query(self) -> Query<'static, Any, AnyArguments> {
        // Assembled from constant SQL only; values are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(self.sql));
        for cell in self.args {
            query = bind_cell(query, cell);
        }
        query
    }

    /// Runs it alone.
    pub async fn execute(self, conn: &mut AnyConnection) -> Result<u64> {
        Ok(self.query().execute(conn).await?.rows_affected())
    }

    /// Runs it alone and gives its rows.
    pub async fn fetch_all(self, conn: &mut AnyConnection) -> Result<Vec<AnyRow>> {
        Ok(self.query().fetch_all(conn).await?)
    }
}

pub(crate) fn bind_cell<'q>(
    query: Query<'q, Any, AnyArguments>,
    cell: Cell,
) -> Query<'q, Any, AnyArguments> {
    match cell {
        Cell::Text(v) => query.bind(v),
        Cell::Int(v) => query.bind(v),
        Cell::Bytes(v) => query.bind(v),
    }
}

/// Statements joined into one query string for SQLite: each one's `$k` becomes
/// `$(k + the parameters before it)`, so every value is bound once, in order.
pub(crate) fn joined(stmts: Vec<Stmt>) -> Stmt {
    let mut all = Stmt::new(String::new());
    for stmt in stmts {
        if !all.sql.is_empty() {
            all.sql.push_str(";\n");
        }
        all.sql.push_str(&renumber(&stmt.sql, all.args.len()));
        all.args.extend(stmt.args);
    }
    all
}

/// `sql` with every `$k` raised by `offset`. The statements are our own constant SQL:
/// no `$` appears in them but in placeholders.
fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut n: usize = 0;
        let mut digits = false;
        while let Some(&(_, d)) = chars.peek() {
            let Some(v) = d.to_digit(10) else { break };
            n = n * 10 + v as usize;
            digits = true;
            chars.next();
        }
        if digits {
            out.push_str(&(n + offset).to_string());
        }
    }
    out
}

/// Runs a SQLite command of several statements and gives the rows of each statement, in
/// order (one list per statement, empty for those that return none). One round trip.
pub(crate) async fn run_sqlite(conn: &mut AnyConnection, script: Stmt) -> Result<Vec<Vec<AnyRow>>> {
    // Kept prepared like any statement: a batch's text depends on its size and kinds of
    // rows, and the few sizes of a steady load repeat.
    let query = script.query();
    let mut results = vec![Vec::new()];
    let mut stream = conn.fetch_many(query);
    while let Some(step) = stream.try_next().await? {
        match step {
            Either::Right(row) => results.last_mut().expect("never empty").push(row),
            // One statement done: the next one's rows start.
            Either::Left(_) => results.push(Vec::new()),
        }
    }
    results.pop();
    Ok(results)
}

/// Ends an open SQLite transaction after a failed command: a statement that failed
/// leaves the transaction open (and a failed `COMMIT` too). Nothing to do when none is
/// open, so its own error is of no interest.
pub(crate) async fn rollback_sqlite(conn: &mut AnyConnection) {
    let _ = conn.execute("ROLLBACK").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renumbering_shifts_every_placeholder_once() {
        assert_eq!(
            renumber("UPDATE t SET a = $2, b = $10 WHERE id = $1 OR x = $2", 7),
            "UPDATE t SET a = $9, b = $17 WHERE id = $8 OR x = $9"
        );
        assert_eq!(renumber("SELECT 1", 3), "SELECT 1");
    }

    #[test]
    fn joined_statements_bind_each_value_once_in_order() {
        let script = joined(vec![
            Stmt::new("UPDATE a SET x = $2 WHERE id = $1")
                .bind("a1")
                .bind(1i64),
            Stmt::new("UPDATE b SET y = $1 WHERE y IS NULL OR y = $1").bind("b1"),
            Stmt::new("COMMIT"),
        ]);
        assert_eq!(
            script.sql,
            "UPDATE a SET x = $2 WHERE id = $1;\nUPDATE b SET y = $3 WHERE y IS NULL OR y = $3;\nCOMMIT"
        );
        assert_eq!(script.args, vec!["a1".into(), 1i64.into(), "b1".into()]);
    }
}
