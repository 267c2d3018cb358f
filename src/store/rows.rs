//! Multi-row statements: one `INSERT … VALUES (…), (…), …` for many rows, so a batch of
//! call events costs a dozen round trips to the database instead of a dozen per event.

use sqlx::any::AnyRow;

use super::Result;
use super::entities::Tx;
use super::script::{SQLITE, Stmt};

/// One bound value. Stored values are text and integers (portable schema), and the raw
/// bytes of the mail store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Bytes(Vec<u8>),
}

impl From<Vec<u8>> for Cell {
    fn from(v: Vec<u8>) -> Self {
        Cell::Bytes(v)
    }
}

impl From<String> for Cell {
    fn from(v: String) -> Self {
        Cell::Text(Some(v))
    }
}

impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Text(Some(v.to_owned()))
    }
}

impl From<Option<String>> for Cell {
    fn from(v: Option<String>) -> Self {
        Cell::Text(v)
    }
}

impl From<i64> for Cell {
    fn from(v: i64) -> Self {
        Cell::Int(Some(v))
    }
}

impl From<Option<i64>> for Cell {
    fn from(v: Option<i64>) -> Self {
        Cell::Int(v)
    }
}

/// Rows for one table, written with as few statements as the parameter limits allow.
pub(crate) struct Rows {
    table: &'static str,
    columns: &'static [&'static str],
    /// Appended to each statement, e.g. `ON CONFLICT (value) DO NOTHING RETURNING value`.
    suffix: &'static str,
    rows: Vec<Vec<Cell>>,
}

/// Bound parameters per statement. Far under SQLite's and PostgreSQL's limits (32,766
/// and 65,535) on purpose: SQLite looks `$n` names up in a list, so binding costs grow
/// with the square of the parameter count (8,000 per statement spent 84% of an import in
/// `sqlite3_bind_parameter_name`). On SQLite the rows are written with anonymous `?`
/// placeholders, which are bound by position without that look-up (at 999 `$n` it was
/// still 40% of the mail intake's writes).
const MAX_PARAMS: usize = 999;

impl Rows {
    pub fn new(
        table: &'static str,
        columns: &'static [&'static str],
        suffix: &'static str,
    ) -> Self {
        Self {
            table,
            columns,
            suffix,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len(), "row width of {}", self.table);
        self.rows.push(row);
    }

    /// The same rows with another suffix: on SQLite under the write lock, what a
    /// `RETURNING` would tell is known before, and each row it returns is one more
    /// message from the connection's thread.
    pub fn with_suffix(self, suffix: &'static str) -> Self {
        Self { suffix, ..self }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Writes the rows; returns what `RETURNING` gave (empty without one).
    pub async fn write(self, tx: &mut Tx<'_>) -> Result<Vec<AnyRow>> {
        let anonymous = tx.backend_name() == SQLITE;
        let mut returned = Vec::new();
        for stmt in self.into_stmts(anonymous) {
            returned.extend(stmt.fetch_all(tx).await?);
        }
        Ok(returned)
    }

    /// The statements that write the rows. `anonymous`: `?` placeholders (SQLite, a
    /// statement run alone); else `$n`, which a multi-statement command needs.
    pub fn into_stmts(self, anonymous: bool) -> Vec<Stmt> {
        let mut stmts = Vec::new();
        let width = self.columns.len();
        let per_statement = (MAX_PARAMS / width).max(1);
        let mut rows = self.rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Vec<Cell>> = rows.by_ref().take(per_statement).collect();
            let mut sql = format!(
                "INSERT INTO {} ({}) VALUES ",
                self.table,
                self.columns.join(", ")
            );
            for (r, _) in chunk.iter().enumerate() {
                if r > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for c in 0..width {
                    if c > 0 {
                        sql.push_str(", ");
                    }
                    if anonymous {
                        sql.push('?');
                    } else {
                        sql.push_str(&format!("${}", r * width + c + 1));
                    }
                }
                sql.push(')');
            }
            sql.push(' ');
            sql.push_str(self.suffix);
            let mut stmt = Stmt::new(sql);
            for cell in chunk.into_iter().flatten() {
                stmt = stmt.bind(cell);
            }
            stmts.push(stmt);
        }
        stmts
    }
}

/// A page of a list query whose filters are assembled from constant clauses; every
/// value is bound. `$?` in a clause stands for that clause's value.
pub(crate) struct FilteredPage {
    sql: String,
    /// Text, or integers where they are compared with integer columns (PostgreSQL does
    /// not compare a BIGINT with a text parameter).
    binds: Vec<Cell>,
}

impl FilteredPage {
    /// `select` ends in a `WHERE` condition on `$1`, the page cursor.
    pub fn new(select: String, cursor: &str) -> Self {
        Self {
            sql: select,
            binds: vec![cursor.into()],
        }
    }

    /// Adds `AND clause`, binding `value` to its `$?`.
    pub fn and(&mut self, clause: &str, value: String) {
        let placeholder = self.bind(value);
        self.sql.push_str(" AND ");
        self.sql.push_str(&clause.replace("$?", &placeholder));
    }

    /// Binds `value` and returns its placeholder, for clauses built with several values
    /// (then added with [`FilteredPage::and_clause`]).
    pub fn bind(&mut self, value: String) -> String {
        self.binds.push(value.into());
        format!("${}", self.binds.len())
    }

    /// [`FilteredPage::bind`] for an integer (a time in milliseconds).
    pub fn bind_int(&mut self, value: i64) -> String {
        self.binds.push(value.into());
        format!("${}", self.binds.len())
    }

    /// Binds every value; their placeholders as an `IN` list body.
    pub fn bind_all<'v>(&mut self, values: impl IntoIterator<Item = &'v str>) -> String {
        values
            .into_iter()
            .map(|v| self.bind(v.to_owned()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Adds `AND (clause)`, whose placeholders come from [`FilteredPage::bind`].
    pub fn and_clause(&mut self, clause: &str) {
        self.sql.push_str(" AND (");
        self.sql.push_str(clause);
        self.sql.push(')');
    }

    /// Adds `AND column IN (values…)`; with no values nothing matches.
    pub fn and_in(&mut self, column: &str, values: impl IntoIterator<Item = String>) {
        let first = self.binds.len() + 1;
        self.binds.extend(values.into_iter().map(Cell::from));
        let count = self.binds.len() + 1 - first;
        self.sql.push_str(" AND ");
        if count == 0 {
            self.sql.push_str("1 = 0");
        } else {
            self.sql
                .push_str(&format!("{column} IN ({})", placeholders(first, count)));
        }
    }

    /// Runs the query in `order`, at most a page (plus one row to see if more follow).
    pub async fn fetch(
        mut self,
        order: &str,
        page: &super::Page,
        pool: &sqlx::AnyPool,
    ) -> Result<Vec<AnyRow>> {
        self.sql.push_str(&format!(
            " ORDER BY {order} LIMIT ${}",
            self.binds.len() + 1
        ));
        // Assembled from constant clauses and placeholders only.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(self.sql));
        for bind in self.binds {
            query = match bind {
                Cell::Text(v) => query.bind(v),
                Cell::Int(v) => query.bind(v),
                Cell::Bytes(v) => query.bind(v),
            };
        }
        Ok(query.bind(page.sql_limit()).fetch_all(pool).await?)
    }
}

/// A `LIKE … ESCAPE '\'` pattern that finds `text` anywhere: the wildcards `%` and `_`
/// and the escape character itself stand for themselves.
pub(crate) fn like_contains(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// `$first, $first+1, …` for an `IN (…)` list of `count` values.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns contacts and companies are created with, in the order every insert writes.
pub(crate) const ENTITY_COLUMNS: &[&str] = &[
    "id",
    "name",
    "responsible",
    "source",
    "created_at",
    "updated_at",
    "last_activity_at",
];

/// The multi-row insert of entities' identifiers; an identifier already listed for its
/// entity is no error.
pub(crate) fn identifier_rows() -> Rows {
    Rows::new(
        "entity_identifiers",
        &["entity_kind", "entity_id", "kind", "value", "position"],
        "ON CONFLICT DO NOTHING",
    )
}

/// The multi-row inserts that create CRM entities, one per table, in the column order the
/// call intake and the mail intake both write.
pub(crate) struct EntityRows {
    pub leads: Rows,
    pub contacts: Rows,
    pub companies: Rows,
    pub deals: Rows,
    pub identifiers: Rows,
}

impl EntityRows {
    pub fn new() -> Self {
        Self {
            leads: Rows::new(
                "leads",
                &[
                    "id",
                    "name",
                    "responsible",
                    "source",
                    "created_at",
                    "updated_at",
                    "last_activity_at",
                    "status",
                    "customer",
                ],
                "",
            ),
            contacts: Rows::new("contacts", ENTITY_COLUMNS, ""),
            companies: Rows::new("companies", ENTITY_COLUMNS, ""),
            deals: Rows::new(
                "deals",
                &[
                    "id",
                    "name",
                    "responsible",
                    "source",
                    "created_at",
                    "updated_at",
                    "last_activity_at",
                    "contact_id",
                    "company_id",
                    "pipeline_id",
                    "stage_id",
                    "status",
                ],
                "",
            ),
            identifiers: identifier_rows(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_find_wildcards_as_written() {
        assert_eq!(super::like_contains("anna"), "%anna%");
        assert_eq!(super::like_contains("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn placeholders_are_numbered_from_first() {
        assert_eq!(super::placeholders(3, 3), "$3, $4, $5");
        assert_eq!(super::placeholders(1, 0), "");
    }
}
