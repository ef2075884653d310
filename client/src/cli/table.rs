//! Plain text tables and human formatting of times and durations.

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table with a header row; columns are padded to their widest cell and
/// separated by two spaces, with no trailing spaces.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            header: columns.iter().map(|(name, _)| name.to_string()).collect(),
            align: columns.iter().map(|(_, align)| *align).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                if index > 0 {
                    line.push_str("  ");
                }
                let pad = widths[index] - cell.chars().count();
                match self.align[index] {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&" ".repeat(pad));
                    }
                    Align::Right => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SSZ` (UTC, proleptic
/// Gregorian; seconds dropped when zero).
pub fn format_utc(ms: i64) -> String {
    let seconds = ms.div_euclid(1_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60,
    );
    if second == 0 {
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}Z")
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (y, m, d).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A duration in ms as the largest whole unit: `30m`, `1h`, `7d`, `1500ms`.
pub fn format_duration_ms(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    for (unit_ms, suffix) in UNITS {
        if ms != 0 && ms % unit_ms == 0 {
            return format!("{}{suffix}", ms / unit_ms);
        }
    }
    format!("{ms}ms")
}

/// A ratio as a percentage with two decimals: `0.1234` → `12.34%`.
pub fn format_percent(ratio: f64) -> String {
    format!("{:.2}%", ratio * 100.0)
}

/// The smallest p-value printed as a number; below it the CLI prints
/// `<0.0001`, as the console does (four decimals would print 0.0000).
pub const P_VALUE_PRINTED_MIN: f64 = 0.0001;

/// A p-value with four decimals, `<0.0001` below [`P_VALUE_PRINTED_MIN`].
pub fn format_p_value(p_value: f64) -> String {
    if p_value < P_VALUE_PRINTED_MIN {
        "<0.0001".to_string()
    } else {
        format!("{p_value:.4}")
    }
}

/// A signed ratio as a percentage with one decimal: `0.373` → `+37.3%`.
pub fn format_signed_percent(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{:+.1}%", ratio * 100.0)
    } else {
        "n/a".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_and_align_numbers() {
        let mut table = Table::new(&[("VARIATION", Align::Left), ("VISITORS", Align::Right)]);
        table.row(vec!["a".into(), "5".into()]);
        table.row(vec!["control".into(), "1234".into()]);
        assert_eq!(
            table.render(),
            "VARIATION  VISITORS\na                 5\ncontrol        1234\n"
        );
    }

    #[test]
    fn utc_times_and_durations_are_readable() {
        assert_eq!(format_utc(0), "1970-01-01 00:00Z");
        assert_eq!(format_utc(1_764_150_000_000), "2025-11-26 09:40Z");
        assert_eq!(format_utc(951_782_400_000 + 1_000), "2000-02-29 00:00:01Z");
        assert_eq!(format_utc(-1_000), "1969-12-31 23:59:59Z");
        assert_eq!(format_duration_ms(1_800_000), "30m");
        assert_eq!(format_duration_ms(86_400_000), "1d");
        assert_eq!(format_duration_ms(1_500), "1500ms");
        assert_eq!(format_duration_ms(0), "0ms");
        assert_eq!(format_signed_percent(0.373), "+37.3%");
        assert_eq!(format_signed_percent(-0.021), "-2.1%");
        assert_eq!(format_percent(0.1234), "12.34%");
        assert_eq!(format_p_value(0.000_02), "<0.0001");
        assert_eq!(format_p_value(0.0001), "0.0001");
        assert_eq!(format_p_value(0.28691), "0.2869");
    }
}
