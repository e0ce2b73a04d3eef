//! "Did you mean": the closest known name to a misspelt one.
//!
//! Unknown types ([`lookup`](super::lookup)) and unknown attributes and
//! attribute values ([`attributes`](super::attributes)) end their label
//! with a suggestion when a candidate is close enough to be a likely typo.

/// Edit distance (on chars) counting insertions, deletions, substitutions
/// and swaps of two neighbours (optimal string alignment), for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The closest candidate to `name`, if close enough to be a likely typo.
pub fn suggest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let limit = (name.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = if c.eq_ignore_ascii_case(name) {
            0
        } else {
            distance(name, c)
        };
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// "did you mean `x`?" for the closest of `candidates`, else `otherwise`.
pub(super) fn did_you_mean(name: &str, candidates: &[String], otherwise: &str) -> String {
    match suggest(name, candidates.iter().map(String::as_str)) {
        Some(s) => format!("did you mean `{s}`?"),
        None => otherwise.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::ATTRIBUTES;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("TimeReadng", ["TimeReading", "Empty"]),
            Some("TimeReading")
        );
        assert_eq!(suggest("idempotant", ATTRIBUTES), Some("idempotent"));
        assert_eq!(suggest("rra", ["R", "RR", "RRA"]), Some("RRA"));
        assert_eq!(suggest("Zzzzzz", ["TimeReading"]), None);
        assert_eq!(suggest("Emtpy", ["Empty"]), Some("Empty"));
        assert_eq!(distance("ab", "ba"), 1);
        assert_eq!(distance("", "abc"), 3);
    }
}
