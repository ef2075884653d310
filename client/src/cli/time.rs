//! Human time input: durations (`30m`, `24h`, `7d`) for `--since`, and
//! times for `--from` / `--to` — ms since the epoch or ISO 8601
//! (`2026-12-04`, `2026-12-04T10:00`, `2026-12-04T10:00:00Z`,
//! `2026-12-04T10:00+02:00`; UTC unless an offset is given) — and the
//! alignment of a range to the project's buckets.

use super::table::{format_duration_ms, format_utc};

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
const WEEK_MS: i64 = 7 * DAY_MS;

/// Parses a duration: a positive whole number and a unit, `ms`, `s`, `m`,
/// `h`, `d` or `w` (`30m`, `24h`, `7d`); answers ms.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_ms = match unit {
        "ms" => 1,
        "s" => SECOND_MS,
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        "w" => WEEK_MS,
        "" => return Err(format!("`{text}` has no unit: write e.g. 30m, 24h or 7d")),
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m, h, d or w (e.g. 24h)"
            ))
        }
    };
    let number: i64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write e.g. 30m, 24h or 7d"))?;
    number
        .checked_mul(unit_ms)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| format!("`{text}` is not a positive duration that fits in ms"))
}

/// Parses a time: ms since the epoch (all digits), or an ISO 8601 date or
/// date-time (UTC unless it carries `Z` or an offset); answers ms since the
/// epoch.
pub fn parse_time_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| format!("`{text}` is too large for ms since the epoch"));
    }
    parse_iso_ms(text).ok_or_else(|| {
        format!(
            "`{text}` is not a time: give ms since the epoch, a date (2026-12-04) or a date and \
             time (2026-12-04T10:00, 2026-12-04T10:00:00Z, 2026-12-04T10:00+02:00)"
        )
    })
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.fff]][Z|±HH:MM|±HHMM]]`.
fn parse_iso_ms(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year = number(&text[0..4])?;
    let month = number(&text[5..7])?;
    let day = number(&text[8..10])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let date_ms = days_from_civil(year, month, day) * DAY_MS;
    let rest = &text[10..];
    if rest.is_empty() {
        return Some(date_ms);
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (clock, offset_ms) = split_offset(rest)?;
    Some(date_ms + parse_clock_ms(clock)? - offset_ms)
}

/// `HH:MM[:SS[.fff]]` as ms since midnight.
fn parse_clock_ms(clock: &str) -> Option<i64> {
    let mut parts = clock.splitn(3, ':');
    let hour = number(parts.next()?)?;
    let minute = number(parts.next()?)?;
    let (second, fraction_ms) = match parts.next() {
        None => (0, 0),
        Some(seconds) => match seconds.split_once('.') {
            None => (number(seconds)?, 0),
            Some((whole, fraction)) => (number(whole)?, fraction_ms(fraction)?),
        },
    };
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(hour * HOUR_MS + minute * MINUTE_MS + second * SECOND_MS + fraction_ms)
}

/// Splits a trailing `Z` or `±HH:MM` / `±HHMM` off a clock; answers the
/// clock and the offset east of UTC in ms.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(clock) = text.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    let Some(sign_at) = text.rfind(['+', '-']) else {
        return Some((text, 0));
    };
    let (clock, offset) = text.split_at(sign_at);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let digits = offset[1..].replace(':', "");
    if digits.len() != 4 {
        return None;
    }
    let hours = number(&digits[0..2])?;
    let minutes = number(&digits[2..4])?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((clock, sign * (hours * HOUR_MS + minutes * MINUTE_MS)))
}

/// Digits of a fraction of a second as ms (`5` → 500, `123456` → 123).
fn fraction_ms(fraction: &str) -> Option<i64> {
    if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = fraction.chars().take(3).collect();
    while digits.len() < 3 {
        digits.push('0');
    }
    digits.parse().ok()
}

/// A non-empty run of ASCII digits.
fn number(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `days_from_civil`: (y, m, d) → days since 1970-01-01.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A query range widened outward to whole buckets: `from` down to its
/// bucket's start, `to` up to a bucket's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignedRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Whether either end moved.
    pub changed: bool,
}

pub fn align_range(from: Option<i64>, to: Option<i64>, bucket_ms: i64) -> AlignedRange {
    let bucket_ms = bucket_ms.max(1);
    let aligned_from = from.map(|from| from.div_euclid(bucket_ms) * bucket_ms);
    let aligned_to = to.map(|to| {
        let start = to.div_euclid(bucket_ms) * bucket_ms;
        if start == to {
            to
        } else {
            start.saturating_add(bucket_ms)
        }
    });
    AlignedRange {
        from: aligned_from,
        to: aligned_to,
        changed: aligned_from != from || aligned_to != to,
    }
}

impl AlignedRange {
    /// The line that tells the user the range was widened, e.g. `range
    /// aligned to 1h buckets: 2025-11-26 09:00Z to 2025-11-26 10:00Z`.
    pub fn notice(&self, bucket_ms: i64) -> String {
        let range = match (self.from, self.to) {
            (Some(from), Some(to)) => format!("{} to {}", format_utc(from), format_utc(to)),
            (Some(from), None) => format!("from {}", format_utc(from)),
            (None, Some(to)) => format!("to {}", format_utc(to)),
            (None, None) => "the default range".to_string(),
        };
        format!(
            "range aligned to {} buckets: {range}",
            format_duration_ms(bucket_ms)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration_ms("30m"), Ok(30 * MINUTE_MS));
        assert_eq!(parse_duration_ms("24h"), Ok(DAY_MS));
        assert_eq!(parse_duration_ms("7d"), Ok(WEEK_MS));
        assert_eq!(parse_duration_ms("2w"), Ok(2 * WEEK_MS));
        assert_eq!(parse_duration_ms("1500ms"), Ok(1_500));
        assert!(parse_duration_ms("24").unwrap_err().contains("no unit"));
        assert!(parse_duration_ms("3y")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration_ms("0h").is_err());
        assert!(parse_duration_ms("h").is_err());
    }

    #[test]
    fn times_are_epoch_ms_or_iso_8601() {
        // 2026-12-04 00:00 UTC.
        let day = 1_796_342_400_000;
        assert_eq!(parse_time_ms("1796342400000"), Ok(day));
        assert_eq!(parse_time_ms("2026-12-04"), Ok(day));
        assert_eq!(parse_time_ms("2026-12-04T10:00"), Ok(day + 10 * HOUR_MS));
        assert_eq!(parse_time_ms("2026-12-04 10:00Z"), Ok(day + 10 * HOUR_MS));
        assert_eq!(
            parse_time_ms("2026-12-04T10:00:30.25Z"),
            Ok(day + 10 * HOUR_MS + 30_250)
        );
        assert_eq!(
            parse_time_ms("2026-12-04T10:00+02:00"),
            Ok(day + 8 * HOUR_MS)
        );
        assert_eq!(
            parse_time_ms("2026-12-04T10:00:00-0130"),
            Ok(day + 11 * HOUR_MS + 30 * MINUTE_MS)
        );
        assert_eq!(parse_time_ms("2000-02-29"), Ok(951_782_400_000));
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-12-04T24:00",
            "2026-12-04T10",
            "yesterday",
            "2026-12-04T10:00+2",
            "",
        ] {
            assert!(parse_time_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_widen_outward_to_whole_buckets() {
        let aligned = align_range(Some(HOUR_MS + 5), Some(2 * HOUR_MS + 1), HOUR_MS);
        assert_eq!(
            aligned,
            AlignedRange {
                from: Some(HOUR_MS),
                to: Some(3 * HOUR_MS),
                changed: true
            }
        );
        assert_eq!(
            aligned.notice(HOUR_MS),
            "range aligned to 1h buckets: 1970-01-01 01:00Z to 1970-01-01 03:00Z"
        );
        let kept = align_range(Some(HOUR_MS), Some(2 * HOUR_MS), HOUR_MS);
        assert!(!kept.changed);
        assert!(!align_range(None, None, HOUR_MS).changed);
    }
}
