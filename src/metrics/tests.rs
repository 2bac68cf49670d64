use super::*;

#[test]
fn every_label_has_its_series() {
    for (i, f) in AttemptFailure::ALL.iter().enumerate() {
        assert_eq!(failure_index(*f), i);
    }
    for (i, r) in REASONS.iter().enumerate() {
        assert_eq!(reason_index(*r), i);
    }
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape("orders"), "orders");
    assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}
