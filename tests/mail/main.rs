//! The e-mail core (`leadline::mail`) against outside corpora in `tests/data/email` and
//! `tests/data/vcard`: one table-driven test per corpus, plus property tests. No I/O in the
//! code under test; these tests only read the fixtures.

mod forward_corpus;
mod parse_corpus;
mod properties;
mod vcard_corpus;

use std::path::PathBuf;

/// A file under `tests/data/`.
pub fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

pub fn read(path: &str) -> Vec<u8> {
    let path = data(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of a tab-separated index, as column name → value, header line skipped.
pub fn tsv(path: &str) -> Vec<Row> {
    let text = String::from_utf8(read(path)).expect("indexes are UTF-8");
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("header line")
        .split('\t')
        .map(str::to_owned)
        .collect();
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| Row {
            header: header.clone(),
            cells: line.split('\t').map(str::to_owned).collect(),
        })
        .collect()
}

pub struct Row {
    header: Vec<String>,
    cells: Vec<String>,
}

impl Row {
    /// The cell of the column whose name starts with `column`.
    pub fn get(&self, column: &str) -> &str {
        let index = self
            .header
            .iter()
            .position(|h| h.starts_with(column))
            .unwrap_or_else(|| panic!("no column {column}"));
        self.cells.get(index).map_or("", String::as_str)
    }
}
